"""A small model, rated points and survey images for the web app tests (API and browser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from percept.categories import CATEGORIES
from percept.model.io import ModelSettings, load_model, save_model

TINY = "percept:tiny"
TINY_DIM = 64
CENTRE = (52.3676, 4.9041)  # lat, lon in Amsterdam


def write_model(path: Path, dim: int = TINY_DIM, n: int = 30, seed: int = 0, names: bool = True,
                calibrated: bool = False) -> Path:
    """A model.npz over ``n`` random survey vectors, every category rated, with image names; ``calibrated``
    adds an interval calibration per category (:func:`calibration`)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    images = {c: [f"survey_{i}.png" for i in range(n)] for c in CATEGORIES} if names else None
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, n) for c in CATEGORIES},
               ModelSettings(clip_model=TINY, k=5, calibration={"folds": 5} if calibrated else None), images,
               calibration={c: calibration(c) for c in CATEGORIES} if calibrated else None)
    return path


def calibration(category: str):
    """A category's interval calibration: 40 nonconformity scores and a beta, different per category."""
    from percept.model.conformal import Calibration

    number = CATEGORIES.index(category)
    scores = np.random.default_rng(100 + number).uniform(0.05, 2.5, 40)
    return Calibration(np.sort(scores), 0.2 + 0.1 * number)


def write_images(folder: Path, n: int = 30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 8 % 256, 120, 200 - i * 5 % 200)).save(folder / f"survey_{i}.png")
    return folder


PANORAMA = (52.3690, 4.9060)  # lat, lon of the panorama whose crops write_rated adds


def write_rated(path: Path, n: int = 60, seed: int = 0, crops: int = 0, uncertainty: bool = False) -> Path:
    """Rated points within ~300 m of CENTRE, as ``percept rate --locations`` writes them (CSV);
    with ``crops``, also that many crops ``pano_1_x<i>.jpg`` of one panorama at PANORAMA. With
    ``uncertainty``, also the columns rating adds (``<category>_sd``, ``_lo``, ``_hi``, best_similarity,
    dissimilarity, out_of_domain, in_survey); every third image and crop 0 lie out of domain."""
    rng = np.random.default_rng(seed)
    lat = CENTRE[0] + rng.uniform(-0.0025, 0.0025, n)
    lon = CENTRE[1] + rng.uniform(-0.004, 0.004, n)
    extra = [f"{c}_{part}" for part in ("sd", "lo", "hi") for c in CATEGORIES] + \
        ["best_similarity", "dissimilarity", "out_of_domain", "in_survey"]
    header = "image," + ",".join(CATEGORIES) + ",lon,lat,angle,sequence"
    rows = [header + ("," + ",".join(extra) if uncertainty else "")]

    noise = np.random.default_rng(seed + 1)  # its own stream: the scores stay those of files without these columns

    def trust(scores: np.ndarray, outside: bool) -> str:
        if not uncertainty:
            return ""
        sd = noise.uniform(0.2, 0.9, len(scores))
        lo, hi = np.clip(scores - 1.6 * sd, 1, 5), np.clip(scores + 1.6 * sd, 1, 5)
        similarity = noise.uniform(0.2, 0.4) if outside else noise.uniform(0.6, 0.95)
        numbers = [*sd, *lo, *hi, similarity, np.sqrt(2 - 2 * similarity) / 0.6]
        return "," + ",".join(f"{x:.4f}" for x in numbers) + f",{outside},False"

    for i in range(n):
        values = rng.uniform(1, 5, len(CATEGORIES))
        scores = ",".join(f"{s:.4f}" for s in values)
        rows.append(f"img_{i}.jpg,{scores},{lon[i]:.7f},{lat[i]:.7f},,{trust(values, i % 3 == 0)}")
    for i in range(crops):
        values = np.full(len(CATEGORIES), 1.0 + i)
        scores = ",".join(f"{s:.4f}" for s in values)
        rows.append(f"pano_1_x{i}.jpg,{scores},{PANORAMA[1]:.7f},{PANORAMA[0]:.7f},{90 * i},{trust(values, i == 0)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def png_bytes(size=(48, 36), colour=(10, 200, 30)) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def build_state(tmp: Path, mapillary=None, images: bool = True, crops: int = 0, options=None,
                calibrated: bool = False, interval: float | None = None):
    """AppState for the test model with the tiny encoder, rated points and (optionally) survey images;
    small limits (200 kB uploads, 4 megapixels) unless ``options`` are given. ``calibrated``: a model
    with interval calibrations (at level ``interval``, default 0.9) and rated points with their uncertainty."""
    from percept.data.decode import ImageLimits
    from percept.data.rated_points import read_rated
    from percept.encoders import encode_pil_images, load_encoder
    from percept.model.estimates import Estimator
    from percept.model.scoring import MultiScorer
    from percept.web.app import AppOptions, AppState
    from percept.web.images import ImageFolder
    from percept.web.names import sample_image_names

    model = load_model(write_model(tmp / "model.npz", calibrated=calibrated))
    scorer = MultiScorer(model)
    encoder = load_encoder(TINY)
    small = AppOptions(max_upload_bytes=200_000, image_limits=ImageLimits(max_pixels=4_000_000))
    return AppState(scorer=scorer, encode=lambda imgs: encode_pil_images(encoder, imgs),
                    estimator=Estimator(model, scorer=scorer, interval=interval),
                    rated=read_rated(write_rated(tmp / "rated.csv", crops=crops, uncertainty=calibrated)),
                    images=ImageFolder(write_images(tmp / "images")) if images else None,
                    names=sample_image_names(model, scorer), mapillary=mapillary,
                    options=options or small, model_name=TINY)


def geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path
