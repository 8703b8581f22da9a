"""One local Ray cluster for the whole test session: 2 CPUs, a 200 MB object store, no dashboard."""

from __future__ import annotations

import pytest

OBJECT_STORE_BYTES = 200 * 1024**2


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """Start the cluster once (on first use) and shut it down at the end; yields its address."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
             log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
