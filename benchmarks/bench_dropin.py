"""Drop-in CLI on the 20,000-image benchmark survey: time and peak memory, plain and with -d."""

from __future__ import annotations

from benchmarks.common import benchmark_survey, console_script, measure

#: The original tool on this kind of 2-core machine: (seconds, peak MB).
ORIGINAL = {"plain": (14.0, 2100.0), "demographics": (21.0, 3000.0)}


def main() -> None:
    survey = benchmark_survey()
    base = [console_script("clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings",
            "-M", "synthetic", "-k", "10,20,30,40,50", "-q"]
    print("clip_retrieval_knn on 20,000 images x 1024 dims, -k 10,20,30,40,50")
    for mode, extra in (("plain", []), ("demographics", ["-d", "demo.csv"])):
        seconds, peak, out = measure(base + extra, survey)
        orig_s, orig_mb = ORIGINAL[mode]
        print(f"  {mode:13s} {seconds:6.2f} s  peak {peak:7.0f} MB  "
              f"({orig_s / seconds:4.1f}x faster, {orig_mb / peak:4.1f}x less memory than the original's "
              f"{orig_s:.0f} s / {orig_mb / 1000:.1f} GB; goal 5x and 4x)  [{len(out.splitlines())} metric lines]")


if __name__ == "__main__":
    main()
