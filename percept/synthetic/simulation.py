"""Simulated survey pieces shared by the sample generators (``percept.synthetic.sample``,
``percept.synthetic.vectors``).

Latent model. Every image has ten scene features in [0, 1] (``FEATURES``: green pixel
share, sky share, pavement share, cycle-lane share, cars, people, shop fronts, street
lamps, disorder (graffiti and litter), sunshine). The true score of category c is
``1 + 4 * sigmoid(SCORE_WEIGHTS[c] @ (features - FEATURE_CENTRE))``, so it lies in (1, 5).

Raters. Each simulated rater (one survey session) has demographics and a personal bias
drawn from N(0, 0.35). A rating is ``clip(round(true score + bias + noise), 1, 5)`` with
noise from N(0, 0.6); raters aged 60 and over rate bikeability 0.4 lower. An image gets
``1 + Poisson(ratings_per_image - 1)`` ratings, each for a category chosen uniformly, so
some of its averages stay null.

Places. Images are crops (``<panorama id>_x<crop>.jpg``, crop = view direction 0..3) of
panoramas taken every ~12 m along driving sequences inside central Amsterdam. Each
panorama has a street profile (``PROFILE_KEYS``) drawn around one of a few Amsterdam
street types; its crops share it, and the 76 environmental keys of a place follow it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from percept.atomic import atomic_open, atomic_write_text
from percept.categories import CATEGORIES
from percept.environment.keys import BUFFER_SIZES, ENV_KEYS
from percept.errors import PerceptError

FEATURES = ("green", "sky", "pavement", "cycle_lane", "cars", "people", "shops", "lamps", "disorder", "sun")
# Rows follow CATEGORIES; columns follow FEATURES.
SCORE_WEIGHTS = np.array([
    # green  sky  pave  cycle cars people shops lamps disorder sun
    [0.6, 0.0, 3.0, 0.0, -1.5, 1.5, 1.5, 0.5, -0.8, 0.0],  # walkability
    [0.5, 0.3, 0.0, 3.5, -2.0, -0.5, 0.0, 0.5, -0.5, 0.0],  # bikeability
    [3.0, 0.8, 0.6, 0.4, -1.5, 0.6, 0.6, 0.0, -3.0, 1.0],  # pleasantness
    [6.0, 0.5, 0.0, 0.0, -0.4, 0.0, 0.0, 0.0, 0.0, 0.0],  # greenness
    [0.4, 0.0, 1.2, 1.2, -1.6, 1.0, 0.5, 2.0, -3.0, 0.4],  # safety
])
FEATURE_CENTRE = np.array([0.28, 0.25, 0.3, 0.5, 0.35, 0.35, 0.2, 0.45, 0.3, 0.6])

RATER_BIAS_SD = 0.35
RATING_NOISE_SD = 0.6
OLDER_AGE, OLDER_BIKEABILITY_SHIFT = 60, -0.4
RATINGS_PER_SESSION = 27

PROFILE_KEYS = ("green", "traffic", "cycle", "walk", "activity", "commerce", "lighting", "disorder", "openness")
STREET_TYPES = np.array([
    # green traffic cycle walk activity commerce lighting disorder openness
    [0.70, 0.25, 0.30, 0.50, 0.50, 0.30, 0.60, 0.20, 0.50],  # canal street
    [0.15, 0.15, 0.30, 0.90, 0.90, 0.90, 0.80, 0.40, 0.30],  # shopping street
    [0.30, 0.85, 0.90, 0.40, 0.30, 0.40, 0.70, 0.30, 0.60],  # arterial road
    [0.50, 0.45, 0.20, 0.40, 0.30, 0.10, 0.50, 0.20, 0.40],  # residential street
    [0.95, 0.10, 0.60, 0.50, 0.40, 0.00, 0.30, 0.10, 0.90],  # park edge
    [0.10, 0.60, 0.20, 0.20, 0.10, 0.05, 0.30, 0.80, 0.70],  # industrial area
])
PROFILE_SD = 0.12
SUNNY_SHARE = 0.6

# Central Amsterdam, well inside the municipality (WGS84).
LON_RANGE, LAT_RANGE = (4.860, 4.940), (52.350, 52.385)
STEP_M, METRES_PER_DEG_LAT = 12.0, 111_320.0
URL_PREFIX = "https://percept.example/img/ams/"
MARKER = "sample.json"

COUNTRIES = ("Netherlands", "Nederland", "NL", "Amsterdam", "", "Germany", "UK", "Spain", "India", "Belgium", "USA")
COUNTRY_P = (0.20, 0.12, 0.05, 0.13, 0.08, 0.10, 0.08, 0.07, 0.07, 0.05, 0.05)
LOCAL_COUNTRIES = 5  # the first five answers (Dutch spellings, blank) come with Dutch postcodes
INCOMES = ("<1000", "1000-3000", ">3000")
EDUCATIONS = ("Primary", "Secondary", "Tertiary", "University", "Postgraduate")
GENDERS = ("man", "woman", "non-binary", "prefer not to say")
GENDER_P = (0.45, 0.42, 0.05, 0.08)
DEMO_COLUMNS = ("rating_id", "ts", "session_id", "image_id", "category_id", "rating", "postalcode", "country",
                "age", "monthly_gross_income", "education", "gender")


@dataclass(frozen=True)
class SampleInfo:
    """What a generator wrote: counts for a summary."""

    root: Path
    kind: str  # "images" or "vectors"
    images: int
    panoramas: int
    ratings: int
    raters: int
    rated_images: dict[str, int]  # images with a non-null average, per category
    category_ratings: dict[str, int]  # rating rows, per category
    dim: int | None = None


@dataclass
class Places:
    """Where each image was taken: file name, panorama, position, view angle and sequence."""

    names: list[str]
    pano: np.ndarray  # panorama index of each image
    lon: np.ndarray
    lat: np.ndarray
    angle: np.ndarray
    sequence: np.ndarray
    n_panos: int


def true_scores(features: np.ndarray) -> np.ndarray:
    """The latent model: (n, 10) scene features → (n, 5) true scores in (1, 5)."""
    latent = (np.asarray(features, dtype=np.float64) - FEATURE_CENTRE) @ SCORE_WEIGHTS.T
    return 1.0 + 4.0 / (1.0 + np.exp(-latent))


def street_profiles(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 9) street profiles in [0, 1]: a random street type plus noise."""
    kinds = rng.integers(0, len(STREET_TYPES), n)
    return np.clip(STREET_TYPES[kinds] + rng.normal(0.0, PROFILE_SD, (n, len(PROFILE_KEYS))), 0.0, 1.0)


def place_images(n_images: int, rng: np.random.Generator,
                 bbox: tuple[float, float, float, float] | None = None) -> Places:
    """Name and place ``n_images`` crops of panoramas along sequences in Amsterdam, or in ``bbox`` (W, S, E, N)."""
    crops = rng.integers(1, 5, n_images)
    n_panos = int(np.searchsorted(np.cumsum(crops), n_images) + 1)
    crops = crops[:n_panos]
    crops[-1] -= int(crops.sum()) - n_images
    pano_ids = 1_000_000 + np.cumsum(rng.integers(50, 5000, n_panos))
    area = ((LON_RANGE, LAT_RANGE) if bbox is None else ((bbox[0], bbox[2]), (bbox[1], bbox[3])))
    lon, lat, heading, sequence = _drive(n_panos, rng, *area)
    names, pano, angles = [], [], []
    for p in range(n_panos):
        for direction in np.sort(rng.permutation(4)[: crops[p]]):
            names.append(f"{pano_ids[p]}_x{direction}.jpg")
            pano.append(p)
            angles.append((heading[p] + 90.0 * direction) % 360.0)
    pano_of = np.array(pano)
    return Places(names, pano_of, lon[pano_of], lat[pano_of], np.round(angles, 1), sequence[pano_of], n_panos)


def _drive(n_panos: int, rng: np.random.Generator, lon_range: tuple[float, float], lat_range: tuple[float, float]):
    """Panorama positions along random-walk sequences of ~9 panoramas each, within the ranges."""
    lengths = 1 + rng.poisson(8, n_panos)
    sequence = np.repeat(np.arange(1, n_panos + 1), lengths)[:n_panos]
    first = np.r_[True, sequence[1:] != sequence[:-1]]
    heading = np.cumsum(np.where(first, rng.uniform(0, 360, n_panos), rng.normal(0, 8, n_panos)))
    metres_lon = METRES_PER_DEG_LAT * np.cos(np.radians(np.mean(lat_range)))
    step_lon = STEP_M * np.sin(np.radians(heading)) / metres_lon
    step_lat = STEP_M * np.cos(np.radians(heading)) / METRES_PER_DEG_LAT
    start_lon = rng.uniform(*lon_range, n_panos)
    start_lat = rng.uniform(*lat_range, n_panos)
    lon = _restart_cumsum(np.where(first, start_lon, step_lon), first)
    lat = _restart_cumsum(np.where(first, start_lat, step_lat), first)
    lon = np.round(np.clip(lon, *lon_range), 6)
    lat = np.round(np.clip(lat, *lat_range), 6)
    return lon, lat, heading % 360.0, sequence


def _restart_cumsum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum that starts afresh wherever ``first`` is true."""
    total = np.cumsum(values)
    starts = np.maximum.accumulate(np.where(first, np.arange(len(values)), 0))
    return total - (total[starts] - values[starts])


def simulate_raters(n_raters: int, rng: np.random.Generator) -> pd.DataFrame:
    """One row per rater (survey session): demographics, personal bias and session start."""
    country_index = rng.choice(len(COUNTRIES), n_raters, p=COUNTRY_P)
    dutch = country_index < LOCAL_COUNTRIES
    dutch_code = [f"{rng.integers(1011, 1109)} {chr(65 + rng.integers(26))}{chr(65 + rng.integers(26))}"
                  for _ in range(n_raters)]
    other_code = [f"{c:05d}" for c in rng.integers(10000, 99999, n_raters)]
    with_code = rng.random(n_raters) < np.where(dutch, 0.7, 0.5)
    start = pd.Timestamp("2024-02-01 09:00:00") + pd.to_timedelta(rng.integers(0, 60 * 86400, n_raters), unit="s")
    return pd.DataFrame({
        "session_id": np.arange(1, n_raters + 1),
        "postalcode": np.where(with_code, np.where(dutch, dutch_code, other_code), ""),
        "country": np.array(COUNTRIES)[country_index],
        "age": (18 + rng.beta(2.0, 3.0, n_raters) * 62).astype(int),
        "monthly_gross_income": np.array(INCOMES)[rng.integers(0, len(INCOMES), n_raters)],
        "education": np.array(EDUCATIONS)[rng.integers(0, len(EDUCATIONS), n_raters)],
        "gender": np.array(GENDERS)[rng.choice(len(GENDERS), n_raters, p=GENDER_P)],
        "bias": rng.normal(0.0, RATER_BIAS_SD, n_raters),
        "start": start,
    })


def simulate_ratings(scores: np.ndarray, ratings_per_image: float, rng: np.random.Generator) -> pd.DataFrame:
    """The demographics CSV table: individual ratings of the images, grouped by image."""
    if ratings_per_image < 1:
        raise PerceptError(f"ratings per image must be at least 1, got {ratings_per_image}")
    n = len(scores)
    image = np.repeat(np.arange(n), 1 + rng.poisson(ratings_per_image - 1.0, n))
    category = rng.integers(0, len(CATEGORIES), len(image))
    raters = simulate_raters(max(5, round(len(image) / RATINGS_PER_SESSION)), rng)
    rater = rng.integers(0, len(raters), len(image))
    shift = raters["bias"].to_numpy()[rater]
    older = raters["age"].to_numpy()[rater] >= OLDER_AGE
    shift = shift + np.where(older & (category == CATEGORIES.index("bikeability")), OLDER_BIKEABILITY_SHIFT, 0.0)
    noisy = scores[image, category] + shift + rng.normal(0.0, RATING_NOISE_SD, len(image))
    table = raters.iloc[rater].reset_index(drop=True)
    order = table.groupby("session_id").cumcount().to_numpy()
    seconds = order * 9 + rng.integers(2, 8, len(image))
    table["ts"] = (table["start"] + pd.to_timedelta(seconds, unit="s")).dt.strftime("%Y-%m-%d %H:%M:%S") + "+01"
    table["rating_id"] = np.arange(1, len(image) + 1)
    table["image_id"] = image + 1
    table["category_id"] = category + 1
    table["rating"] = np.clip(np.rint(noisy), 1, 5).astype(int)
    return table[list(DEMO_COLUMNS)]


def average_ratings(ratings: pd.DataFrame, n_images: int) -> np.ndarray:
    """(n, 5) mean rating per image and category; NaN where nobody rated it."""
    key = (ratings["image_id"].to_numpy() - 1) * len(CATEGORIES) + ratings["category_id"].to_numpy() - 1
    size = n_images * len(CATEGORIES)
    sums = np.bincount(key, weights=ratings["rating"].to_numpy(dtype=np.float64), minlength=size)
    counts = np.bincount(key, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(n_images, len(CATEGORIES))


def simulate_environment(profiles: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The 76 environmental keys for places with the given (n, 9) street profiles."""
    p = dict(zip(PROFILE_KEYS, profiles.T))
    density = np.clip(0.5 * p["commerce"] + 0.3 * p["activity"] + rng.uniform(0.0, 0.4, len(profiles)), 0, 1)
    values = {}
    for size in BUFFER_SIZES:
        area = (size / 100.0) ** 2
        for measure, column in _environment_at(p, density, area, rng).items():
            values[f"{measure}_{size}"] = column
    return {key: values[key] for key in ENV_KEYS}


AMENITY_RATES = {  # expected count within 100 m: (base, driver, weight)
    "greenspace": (0.3, "green", 2.5), "shops": (0.2, "commerce", 5.0),
    "public_transport": (0.3, "traffic", 1.5), "sustenance": (0.3, "activity", 3.5),
    "education": (0.2, "walk", 0.6), "financial": (0.1, "commerce", 0.8),
    "healthcare": (0.2, "activity", 0.7), "entertainment": (0.1, "activity", 2.0),
}


def _environment_at(p: dict, density: np.ndarray, area: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The 38 measures within one buffer; ``area`` is its area relative to the 100 m buffer."""
    n, reach = len(density), np.sqrt(area)
    km2 = np.pi * 0.01 * area
    out = {}
    for name, (base, driver, weight) in AMENITY_RATES.items():
        out[f"{name}_count"] = rng.poisson(area * (base + weight * p[driver] * (0.5 + density)))
    for name in AMENITY_RATES:
        out[f"{name}_density_or_proportion"] = _round(out[f"{name}_count"] / km2)
    out["greenspace_density_or_proportion"] = _round(np.clip(0.6 * p["green"] + rng.normal(0, 0.08, n), 0, 1))
    for name in AMENITY_RATES:
        count = out[f"{name}_count"]
        out[f"{name}_shannon_entropy"] = _round(np.log(np.maximum(count, 1)) * rng.uniform(0.5, 1.0, n))
    walk = reach * (150 + 300 * p["walk"] + 150 * density) * rng.uniform(0.8, 1.2, n)
    out["bike_network_length"] = _round(reach * (60 + 250 * p["cycle"] + 80 * density) * rng.uniform(0.8, 1.2, n))
    out["walk_network_length"] = _round(walk)
    nodes = 1 + rng.poisson(area * (2 + 4 * density))
    edges = nodes + rng.poisson(0.4 * nodes)
    out["num_nodes"], out["num_edges"] = nodes, edges
    out["streets_per_node_avg"] = _round(2.3 + 0.9 * density + rng.normal(0, 0.15, n))
    # Shares of nodes with 1 (dead end), 2, 3 and 4 streets.
    shares = rng.gamma(np.stack([np.ones(n), np.full(n, 0.5), 3 + 2 * density, 1 + 3 * density], 1))
    shares /= shares.sum(1, keepdims=True)
    for column, label in ((0, 1), (2, 3), (3, 4)):
        out[f"streets_per_node_proportions{label}"] = _round(shares[:, column])
    out["intersection_count"] = rng.binomial(nodes, 0.7 + 0.25 * density)
    total = walk * rng.uniform(0.55, 0.75, n)
    out["street_length_total"] = _round(total)
    out["street_segment_count"] = edges
    out["street_length_avg"] = _round(total / edges)
    out["orientation_entropy"] = _round(np.log(36) - rng.uniform(0, 0.9, n) * (1 - density))
    speed = np.select([p["traffic"] > 0.6, p["traffic"] > 0.25], [50.0, 30.0], 15.0)
    out["median_speed"] = np.where(rng.random(n) < 0.15 * reach, np.minimum(speed + 20.0, 50.0), speed)
    return out


def _round(values: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64), 4)


def claim_output_dir(out_dir: str | Path, kind: str, seed: int, files: list[str], force: bool = False) -> Path:
    """Make ``out_dir`` ready for a sample: a new or empty folder, or with ``force`` any folder.

    With ``force``, an earlier sample's files that this one does not write are removed; files
    that no sample wrote are kept. Writes the marker first, listing the files this sample owns,
    so an interrupted run can be redone.
    """
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise PerceptError(f"{root} is a file: give a new or empty folder for the sample survey")
    marker = root / MARKER
    old_files: list[str] = []
    if root.is_dir() and any(root.iterdir()):
        if not force:
            earlier = "an earlier sample survey" if marker.is_file() else "files that are not a sample survey"
            raise PerceptError(f"{root} is not empty (it holds {earlier}): give a new or empty folder, or "
                               "--force to write the sample into it (overwriting its sample files)")
        old_files = _earlier_files(marker)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"generator": f"percept {kind} sample", "seed": seed, "files": files},
                                         indent=1) + "\n")
    _remove_stale(root, sorted(set(old_files) - set(files)))
    return root


def _earlier_files(marker: Path) -> list[str]:
    """The files an earlier sample listed in its marker (none when there is no readable marker)."""
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [name for name in files if isinstance(name, str)] if isinstance(files, list) else []


def _remove_stale(root: Path, names: list[str]) -> None:
    """Delete files an earlier sample wrote and this one does not, and the folders left empty."""
    inside = root.resolve()
    for name in names:
        path = (root / name).resolve()
        if not path.is_relative_to(inside):
            continue
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == inside or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()


def write_survey_files(root: Path, places: Places, averages: np.ndarray, environment: dict[str, np.ndarray],
                       ratings: pd.DataFrame, scenes: np.ndarray, scores: np.ndarray) -> None:
    """Write data.geojson, demo.csv, locations.csv and scenes.csv (features and true scores)."""
    _write_geojson(root / "data.geojson", places, averages, environment)
    with atomic_open(root / "demo.csv", "w", encoding="utf-8", newline="") as handle:
        ratings.to_csv(handle, index=False, lineterminator="\n")
    locations = pd.DataFrame({"image": places.names, "lon": places.lon, "lat": places.lat,
                              "angle": places.angle, "sequence": places.sequence})
    with atomic_open(root / "locations.csv", "w", encoding="utf-8", newline="") as handle:
        locations.to_csv(handle, index=False, lineterminator="\n")
    truth = pd.DataFrame(np.round(scenes, 4), columns=list(FEATURES))
    truth.insert(0, "image", places.names)
    for c, category in enumerate(CATEGORIES):
        truth[f"true_{category}"] = np.round(scores[:, c], 4)
    with atomic_open(root / "scenes.csv", "w", encoding="utf-8", newline="") as handle:
        truth.to_csv(handle, index=False, lineterminator="\n")


def _write_geojson(path: Path, places: Places, averages: np.ndarray, environment: dict[str, np.ndarray]) -> None:
    """A FeatureCollection in the survey export's property order."""
    n = len(places.names)
    columns = [list(range(1, n + 1)), [URL_PREFIX + name for name in places.names]]
    columns += [[None if np.isnan(v) else float(v) for v in averages[:, c]] for c in range(len(CATEGORIES))]
    columns += [environment[key].tolist() for key in ENV_KEYS]
    keys = ["image_id", "url", *(f"average_{c}" for c in CATEGORIES), *ENV_KEYS]
    points = zip(places.lon.tolist(), places.lat.tolist())
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write('{"type": "FeatureCollection", "features": [')
        for number, (row, point) in enumerate(zip(zip(*columns), points)):
            feature = {"type": "Feature", "properties": dict(zip(keys, row)),
                       "geometry": {"type": "Point", "coordinates": list(point)}}
            handle.write((", " if number else "") + json.dumps(feature))
        handle.write("]}\n")


def summarise(root: Path, kind: str, places: Places, ratings: pd.DataFrame, averages: np.ndarray,
              dim: int | None = None) -> SampleInfo:
    """Counts for the command's summary."""
    per_category = np.bincount(ratings["category_id"].to_numpy() - 1, minlength=len(CATEGORIES))
    return SampleInfo(
        root=root, kind=kind, images=len(places.names), panoramas=places.n_panos, ratings=len(ratings),
        raters=int(ratings["session_id"].nunique()),
        rated_images={c: int((~np.isnan(averages[:, i])).sum()) for i, c in enumerate(CATEGORIES)},
        category_ratings={c: int(per_category[i]) for i, c in enumerate(CATEGORIES)}, dim=dim)
