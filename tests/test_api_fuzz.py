"""A bounded schemathesis run against the API: no 500, and no status code the OpenAPI schema does not list."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from web_fixtures import build_state

from percept.web.app import create_app

EXAMPLES = {GenerationMode.POSITIVE: 55, GenerationMode.NEGATIVE: 30}
MIN_REQUESTS = 300
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(operation, mode: GenerationMode, examples: int, sent: list[tuple[str, int]]) -> None:
    """Send ``examples`` generated requests to one operation, validating every answer."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def call(case):
        response = case.call()
        sent.append((operation.label, response.status_code))
        case.validate_response(response, checks=CHECKS)

    call()


def test_generated_requests_get_documented_answers(tmp_path):
    app = create_app(build_state(tmp_path))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent: list[tuple[str, int]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        has_inputs = any(True for _ in operation.iter_parameters()) or len(operation.body) > 0
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not has_inputs:
                continue  # nothing to make invalid
            fuzz(operation, mode, examples, sent)
    statuses = {status for _, status in sent}
    assert len(sent) >= MIN_REQUESTS, f"only {len(sent)} requests were generated"
    assert 500 not in statuses and {200, 400, 404, 415, 422} <= statuses  # the error paths were reached
    print(f"\n{len(sent)} generated requests, statuses {sorted(statuses)}")
