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


def write_model(path: Path, dim: int = TINY_DIM, n: int = 30, seed: int = 0, names: bool = True) -> Path:
    """A model.npz over ``n`` random survey vectors, every category rated, with image names."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    images = {c: [f"survey_{i}.png" for i in range(n)] for c in CATEGORIES} if names else None
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, n) for c in CATEGORIES},
               ModelSettings(clip_model=TINY, k=5), images)
    return path


def write_images(folder: Path, n: int = 30) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 8 % 256, 120, 200 - i * 5 % 200)).save(folder / f"survey_{i}.png")
    return folder


PANORAMA = (52.3690, 4.9060)  # lat, lon of the panorama whose crops write_rated adds


def write_rated(path: Path, n: int = 60, seed: int = 0, crops: int = 0) -> Path:
    """Rated points within ~300 m of CENTRE, as ``percept rate --locations`` writes them (CSV);
    with ``crops``, also that many crops ``pano_1_x<i>.jpg`` of one panorama at PANORAMA."""
    rng = np.random.default_rng(seed)
    lat = CENTRE[0] + rng.uniform(-0.0025, 0.0025, n)
    lon = CENTRE[1] + rng.uniform(-0.004, 0.004, n)
    rows = ["image," + ",".join(CATEGORIES) + ",lon,lat,angle,sequence"]
    for i in range(n):
        scores = ",".join(f"{s:.4f}" for s in rng.uniform(1, 5, len(CATEGORIES)))
        rows.append(f"img_{i}.jpg,{scores},{lon[i]:.7f},{lat[i]:.7f},,")
    for i in range(crops):
        scores = ",".join(f"{1 + i:.4f}" for _ in CATEGORIES)
        rows.append(f"pano_1_x{i}.jpg,{scores},{PANORAMA[1]:.7f},{PANORAMA[0]:.7f},{90 * i},")
    path.write_text("\n".join(rows) + "\n")
    return path


def png_bytes(size=(48, 36), colour=(10, 200, 30)) -> bytes:
    import io

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def build_state(tmp: Path, mapillary=None, images: bool = True, crops: int = 0, options=None):
    """AppState for the test model with the tiny encoder, rated points and (optionally) survey images;
    small limits (200 kB uploads, 4 megapixels) unless ``options`` are given."""
    from percept.city.rating import read_rated
    from percept.data.decode import ImageLimits
    from percept.encoders import encode_pil_images, load_encoder
    from percept.model.estimates import Estimator
    from percept.model.scoring import MultiScorer
    from percept.web.app import AppOptions, AppState
    from percept.web.images import ImageFolder
    from percept.web.names import sample_image_names

    model = load_model(write_model(tmp / "model.npz"))
    scorer = MultiScorer(model)
    encoder = load_encoder(TINY)
    small = AppOptions(max_upload_bytes=200_000, image_limits=ImageLimits(max_pixels=4_000_000))
    return AppState(scorer=scorer, encode=lambda imgs: encode_pil_images(encoder, imgs),
                    estimator=Estimator(model, scorer=scorer),
                    rated=read_rated(write_rated(tmp / "rated.csv", crops=crops)),
                    images=ImageFolder(write_images(tmp / "images")) if images else None,
                    names=sample_image_names(model, scorer), mapillary=mapillary,
                    options=options or small, model_name=TINY)


def geojson(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path
