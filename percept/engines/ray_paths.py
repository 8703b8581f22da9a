"""Paths that mean the same on every node: made absolute on the driver, checked on every node before work starts.

A Ray worker runs in the folder its node was started from, so a relative path names another file
there, or none. The driver therefore resolves every input and output path first; then one task
per alive node checks that the node sees each of them, so a path missing on one machine stops
the run at once with one line naming the node and the path, not a traceback from a worker later.
"""

from __future__ import annotations

import os
from pathlib import Path

from percept.engines.ray_cluster import ray_module
from percept.errors import PerceptError


def absolute(path: str | Path) -> Path:
    """``path`` made absolute against this process's folder (``~`` expanded; links kept as named)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def missing_paths(named: dict[str, str]) -> list[tuple[str, str]]:
    """The (what, path) pairs of ``named`` ({what: absolute path}) that do not exist here; ``what`` ending in
    ``folder of`` asks only for the parent folder (an output that does not exist yet)."""
    missing = []
    for what, path in named.items():
        target = Path(path).parent if what.startswith("folder of ") else Path(path)
        if not target.exists():
            missing.append((what, str(target)))
    return missing


def _node_check(named: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    ray = ray_module()
    return ray.util.get_node_ip_address(), missing_paths(named)


def require_visible(named: dict[str, str | Path]) -> None:
    """Check on every alive node of the connected cluster that each path of ``named`` ({what: path}) exists.

    Keys starting with ``folder of`` (an output to be written) need only their parent folder. Raises
    one PerceptError naming the first node and path that is missing.
    """
    ray = ray_module()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = {what: str(absolute(path)) for what, path in named.items()}
    check = ray.remote(_node_check)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node.get("Resources", {}).get("CPU")]
    results = ray.get([check.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                       .remote(paths) for node in nodes])
    for (ip, missing), node in zip(results, nodes):
        if missing:
            what, path = missing[0]
            raise PerceptError(f"node {ip} ({node[:8]}) of the Ray cluster cannot see the {what} at {path}: put it "
                               "on storage every node mounts at the same path")
