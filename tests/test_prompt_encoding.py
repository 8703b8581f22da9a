"""Environmental text that fits CLIP: token counting, the truncation warning, clause encoding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REFERENCE

from percept.data.survey import load_survey
from percept.encoders.tokens import token_counter
from percept.environment.clauses import SPECIAL_TOKENS, mean_of_clauses, split_clauses, truncation
from percept.environment.prompts import build_prompts

STAND_IN = REFERENCE / "tools"


@pytest.fixture(scope="module")
def style1_prompts() -> list[str]:
    return build_prompts(load_survey(REFERENCE / "survey" / "data.geojson").features, 1).prompts


def test_style1_prompts_have_at_most_380_distinct_clauses(style1_prompts):
    index = split_clauses(style1_prompts)
    assert index.prompts == 400 and len(index.ids) == 400 * 76
    assert 76 < len(index.clauses) <= 380
    rebuilt = ["; ".join(index.clauses[c] for c in index.ids[a:b]) for a, b in zip(index.starts[:-1], index.starts[1:])]
    assert rebuilt == style1_prompts


def test_mean_of_clauses_is_the_normalised_mean():
    index = split_clauses(["a; b", "b", "", "a; a; c"])
    vectors = np.array([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 5.0]])  # a, b, c (normalised inside)
    got = mean_of_clauses(vectors, index)
    expected = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [2, 0, 1]], dtype=float)
    norms = np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.divide(expected, norms, out=np.zeros_like(expected), where=norms > 0))


def test_open_clip_tokens_of_a_prompt_add_up_over_its_clauses(style1_prompts):
    counter = token_counter("open_clip:ViT-B-32")
    assert counter is not None and counter.context_length == 77
    prompts = style1_prompts[:5]
    index = split_clauses(prompts)
    own = counter.count(index.clauses) - SPECIAL_TOKENS
    whole = counter.count(prompts)
    for i in range(len(prompts)):
        ids = index.ids[index.starts[i]:index.starts[i + 1]]
        assert whole[i] == own[ids].sum() + (len(ids) - 1) + SPECIAL_TOKENS
    assert whole.min() > 1000  # a 76-variable style-1 prompt is far longer than CLIP's window


def test_truncation_counts_the_clauses_a_window_keeps():
    index = split_clauses(["a is b; c is d; e is f", "", "a is b"])
    own = np.array([3, 3, 3])  # each clause alone; ";" separators are one token each
    assert truncation(index, own, 13).prompts_cut == 0  # 1 + 3+1+3+1+3 + 1 = 13 tokens
    cut = truncation(index, own, 12)
    assert (cut.prompts_cut, cut.clauses_lost, cut.clauses) == (1, 1, 4)
    assert truncation(index, own, 8).clauses_lost == 2
    assert "25%" in cut.warning("open_clip:ViT-B-32") and truncation(index, own, 13).warning("m") is None


def test_whole_prompts_warn_with_a_real_tokenizer(survey_copy, run_tool):
    """The drop-in keeps whole prompts for parity and says how much of them the window cuts."""
    result = run_tool(["clip_retrieval_knn", "-g", "data.geojson", "-e", "embeddings", "-M", "open_clip:ViT-B-32",
                       "--environmental", "--prompt-style", "1", "-k", "10"], cwd=survey_copy, path=[STAND_IN])
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "token window" in line)
    assert warning.startswith("warning: 400 of 400 environmental prompts are longer than the 77-token window")
    assert "% of their variables" in warning and "--prompt-encoding clauses" in warning
    assert result.stdout.count("category = ") == 5


def test_clauses_encode_each_distinct_clause_once_and_cache_them(survey_copy, run_tool):
    args = ["clip_retrieval_knn", "-g", "data.geojson", "-e", "embeddings", "-M", "percept:tiny", "--encoder",
            "builtin", "--environmental", "--prompt-style", "1", "--prompt-encoding", "clauses", "-k", "10"]
    first = run_tool(args, cwd=survey_copy)
    assert first.returncode == 0, first.stderr
    encoded = int(first.stderr.split(" texts, ")[0].split()[-1])
    assert 76 < encoded <= 380 and f"{encoded} texts, {encoded} encoded" in first.stderr
    part = survey_copy / "text-prompt1-embeddings" / "clauses" / "text_emb" / "text_emb_0.npy"
    assert np.load(part).shape[0] == encoded
    written = part.stat().st_mtime_ns
    second = run_tool(args, cwd=survey_copy)
    assert second.returncode == 0 and part.stat().st_mtime_ns == written and " encoded" not in second.stderr
    assert second.stdout == first.stdout and first.stdout.count("category = ") == 5
    whole = run_tool(args[:-4] + ["-k", "10"], cwd=survey_copy)
    assert whole.returncode == 0 and whole.stdout != first.stdout


def test_clauses_through_clip_retrieval_match_rows_by_caption(survey_copy, run_tool):
    args = ["clip_retrieval_knn", "-g", "data.geojson", "-e", "embeddings", "-M", "open_clip:ViT-B-32",
            "--environmental", "--environmental-method", "slerp", "--prompt-style", "1",
            "--prompt-encoding", "clauses", "-k", "10"]
    result = run_tool(args, cwd=survey_copy, path=[STAND_IN])
    assert result.returncode == 0, result.stderr
    assert "token window" not in result.stderr
    files = list((survey_copy / "text-prompt1-embeddings" / "clauses" / "text").glob("*.txt"))
    assert 76 < len(files) <= 380
    again = run_tool(args, cwd=survey_copy, path=[STAND_IN])
    assert again.stdout == result.stdout
