"""The built-in sample survey: procedurally drawn street scenes with simulated ratings.

Each image is a 256x256 one-point-perspective view along a street: sky with clouds,
facades with windows, shop fronts and graffiti, a road with cars, dashed markings and
red cycle lanes, grass verges, pavements with people, trees, street lamps and litter.
The picture is drawn in palette mode, so every pixel's class is known; the ten scene
features are then measured from it (``measure``: pixel shares of greenery, sky,
pavement and cycle lane; counts of visible cars, people, shop fronts, lamps and
disorder; sunshine) and set the true scores through the latent model of
``percept.synthetic.simulation``. ``scenes.csv`` records the features and true scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from percept.atomic import atomic_path
from percept.synthetic.simulation import (
    FEATURES,
    PROFILE_KEYS,
    SUNNY_SHARE,
    SampleInfo,
    average_ratings,
    claim_output_dir,
    place_images,
    simulate_environment,
    simulate_ratings,
    street_profiles,
    summarise,
    true_scores,
    write_survey_files,
)

SIZE = 256
CAM_H = 3.0  # camera height, metres
Z_BOTTOM = 4.0  # depth (metres) of the ground at the image's bottom edge
JPEG_QUALITY = 90
NOISE = 6  # amplitude of the per-pixel sensor noise
RATINGS_PER_IMAGE = 4.0

VARIANTS = 8  # palette indices per class: index = class * VARIANTS + variant
COLOURS = {  # class: colours of its variants (cycled), before a small per-image jitter
    "sky": [(0, 0, 0)],  # set per image as a gradient
    "cloud": [(0, 0, 0)],  # set per image by the weather
    "facade": [(150, 70, 50), (120, 60, 45), (175, 95, 70), (200, 180, 150), (225, 220, 210), (140, 140, 145),
               (95, 55, 45), (190, 120, 80)],
    "window": [(40, 50, 65), (70, 85, 100), (30, 35, 45)],
    "road": [(85, 85, 90)],
    "marking": [(235, 235, 230)],
    "pavement": [(175, 165, 152)],
    "cycle_lane": [(165, 65, 58)],
    "grass": [(75, 145, 50), (90, 155, 60), (60, 125, 45)],
    "foliage": [(40, 110, 40), (60, 130, 45), (32, 92, 36), (78, 140, 55)],
    "trunk": [(90, 65, 45), (70, 50, 35)],
    "car": [(180, 30, 30), (30, 60, 150), (230, 230, 230), (25, 25, 28), (160, 160, 168), (220, 180, 40),
            (120, 20, 40), (80, 90, 110)],
    "glass": [(50, 60, 75)],
    "person": [(30, 40, 80), (150, 40, 40), (200, 190, 170), (40, 40, 40), (230, 120, 40), (90, 60, 120),
               (60, 60, 70), (210, 170, 140)],  # variant 7: skin
    "shop": [(200, 40, 40), (40, 70, 160), (230, 140, 30), (240, 240, 235), (110, 40, 110), (30, 30, 30)],
    "lamp": [(60, 60, 60), (250, 230, 150)],  # pole, light
    "graffiti": [(240, 40, 180), (40, 200, 240), (250, 220, 30), (250, 100, 30)],
    "litter": [(230, 230, 220), (200, 60, 50), (60, 90, 200)],
    "wheel": [(20, 20, 20)],
}
CLASSES = tuple(COLOURS)
SKY_GRADIENT = {True: ((70, 130, 210), (175, 205, 235)), False: ((145, 150, 160), (200, 202, 206))}
CLOUD_COLOUR = {True: (245, 245, 248), False: (170, 172, 178)}
# Measured share or count at which a feature reaches 1.
FEATURE_SCALE = {"green": 0.35, "sky": 0.45, "pavement": 0.2, "cycle_lane": 0.06,
                 "cars": 6, "people": 8, "shops": 4, "lamps": 4, "disorder": 8}
COUNTED = ("car", "person", "shop", "lamp", "graffiti", "litter")


def generate_sample(out_dir: str | Path, n_images: int = 200, seed: int = 0, force: bool = False,
                    bbox: tuple[float, float, float, float] | None = None) -> SampleInfo:
    """Write the sample survey: images/, data.geojson, demo.csv, locations.csv, scenes.csv.

    ``out_dir`` must be new or empty unless ``force`` (see :func:`claim_output_dir`). The images
    are placed in central Amsterdam, or inside ``bbox`` (W, S, E, N) when given.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    streams = np.random.SeedSequence(seed).spawn(4)
    place_rng, scene_rng, rating_rng, env_rng = (np.random.default_rng(s) for s in streams)
    places = place_images(n_images, place_rng, bbox)
    root = claim_output_dir(out_dir, "images", seed, _owned_files(places.names), force)
    profiles = street_profiles(places.n_panos, scene_rng)
    sunny = scene_rng.random(places.n_panos) < SUNNY_SHARE
    features = np.empty((n_images, len(FEATURES)))
    for i, name in enumerate(places.names):
        p = places.pano[i]
        image, features[i] = draw_scene(profiles[p], bool(sunny[p]), scene_rng)
        with atomic_path(root / "images" / name) as tmp:
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    scores = true_scores(features)
    ratings = simulate_ratings(scores, RATINGS_PER_IMAGE, rating_rng)
    averages = average_ratings(ratings, n_images)
    environment = {k: v[places.pano] for k, v in simulate_environment(profiles, env_rng).items()}
    write_survey_files(root, places, averages, environment, ratings, features, scores)
    return summarise(root, "images", places, ratings, averages)


def _owned_files(names: list[str]) -> list[str]:
    return [f"images/{n}" for n in names] + ["data.geojson", "demo.csv", "locations.csv", "scenes.csv"]


def draw_scene(profile: np.ndarray, sunny: bool, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Draw one street view for a street profile; return the RGB image and its measured features."""
    street = Street.sample(dict(zip(PROFILE_KEYS, profile)), rng)
    canvas = Canvas(street, _palette(sunny, rng))
    canvas.sky(sunny, rng)
    canvas.ground()
    canvas.buildings(rng)
    canvas.objects(rng)
    labels = np.asarray(canvas.image) // VARIANTS
    rgb = np.asarray(canvas.image.convert("RGB"), dtype=np.int16)
    rgb = np.clip(rgb + rng.integers(-NOISE, NOISE + 1, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb), measure(labels, canvas.seen, sunny)


def measure(labels: np.ndarray, seen: dict[str, int], sunny: bool) -> np.ndarray:
    """The ten scene features (``FEATURES`` order) from the class of every pixel and the visible objects."""
    share = np.bincount(labels.ravel(), minlength=len(CLASSES)) / labels.size
    of = {c: share[CLASSES.index(c)] for c in CLASSES}
    raw = {"green": of["grass"] + of["foliage"], "sky": of["sky"] + of["cloud"], "pavement": of["pavement"],
           "cycle_lane": of["cycle_lane"], "cars": seen["car"], "people": seen["person"], "shops": seen["shop"],
           "lamps": seen["lamp"], "disorder": seen["graffiti"] + seen["litter"]}
    values = [min(1.0, raw[f] / FEATURE_SCALE[f]) for f in FEATURES[:-1]]
    return np.array([*values, 1.0 if sunny else 0.0])


def _palette(sunny: bool, rng: np.random.Generator) -> list[int]:
    """256 palette colours: each class's variants, jittered per image."""
    colours = np.zeros((256, 3), dtype=int)
    for c, name in enumerate(CLASSES):
        base = np.array([COLOURS[name][v % len(COLOURS[name])] for v in range(VARIANTS)])
        colours[c * VARIANTS:(c + 1) * VARIANTS] = base + rng.integers(-12, 13, 3)
    top, bottom = (np.array(c) for c in SKY_GRADIENT[sunny])
    sky = CLASSES.index("sky") * VARIANTS
    colours[sky:sky + VARIANTS] = [top + (bottom - top) * v / (VARIANTS - 1) for v in range(VARIANTS)]
    cloud = CLASSES.index("cloud") * VARIANTS
    colours[cloud:cloud + VARIANTS] = CLOUD_COLOUR[sunny]
    return np.clip(colours, 0, 255).ravel().tolist()


@dataclass
class Street:
    """The layout of one view, in metres: road half width, per side verge, cycle lane and pavement."""

    p: dict
    horizon: float
    vanish_x: float
    camera_x: float
    road: float
    cycle: tuple[bool, bool]
    verge: tuple[float, float]
    pavement: tuple[float, float]
    far: float
    height: float

    @classmethod
    def sample(cls, p: dict, rng: np.random.Generator) -> Street:
        return cls(
            p=p, horizon=SIZE * rng.uniform(0.38, 0.48), vanish_x=SIZE / 2 + rng.uniform(-25, 25),
            camera_x=rng.uniform(-1.0, 1.0), road=2.5 + 3.5 * p["traffic"] + rng.uniform(-0.3, 0.3),
            cycle=tuple(rng.random(2) < p["cycle"]),
            verge=tuple(np.where(rng.random(2) < 0.8 * p["green"], 1.5, 0.0)),
            pavement=tuple(np.maximum(0.8, 1.2 + 3.5 * p["walk"] + rng.uniform(-0.3, 0.3, 2))),
            far=rng.uniform(45, 80), height=8 + 14 * (1 - p["openness"]))

    def facade(self, side: int) -> float:
        """Distance of side's (0 left, 1 right) facade from the road's centre line."""
        return self.road + self.verge[side] + self.pavement[side]


SIGN = (-1.0, 1.0)


class Canvas:
    """A palette-mode drawing in which palette index // VARIANTS names each pixel's class."""

    def __init__(self, street: Street, palette: list[int]):
        self.street = street
        self.image = Image.new("P", (SIZE, SIZE))
        self.image.putpalette(palette)
        self.pen = ImageDraw.Draw(self.image)
        self.pxm = (SIZE - street.horizon) / CAM_H
        self.seen = {name: 0 for name in COUNTED}

    def at(self, x: float, y: float, z: float) -> tuple[float, float]:
        """Image position of the world point x (right of the road centre), y (up), z (ahead), in metres."""
        s = Z_BOTTOM / z
        return (self.street.vanish_x + s * (x - self.street.camera_x) * self.pxm,
                self.street.horizon + s * (CAM_H - y) * self.pxm)

    def fill(self, name: str, variant: int = 0) -> int:
        return CLASSES.index(name) * VARIANTS + variant % VARIANTS

    def polygon(self, name: str, variant: int, points) -> None:
        self.pen.polygon([self.at(*p) for p in points], fill=self.fill(name, variant))

    def upright(self, name: str, variant: int, x0: float, x1: float, y0: float, y1: float, z: float) -> None:
        """A rectangle facing the camera."""
        self.polygon(name, variant, [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)])

    def wall(self, name: str, variant: int, x: float, y0: float, y1: float, z0: float, z1: float) -> None:
        """A rectangle in the plane of a facade."""
        self.polygon(name, variant, [(x, y0, z0), (x, y0, z1), (x, y1, z1), (x, y1, z0)])

    def strip(self, name: str, x0: float, x1: float, z0: float = 2.0, z1: float = 1e4) -> None:
        """A band of ground between x0 and x1."""
        self.polygon(name, 0, [(x0, 0, z0), (x1, 0, z0), (x1, 0, z1), (x0, 0, z1)])

    def ellipse(self, name: str, variant: int, x: float, y: float, z: float, rx: float, ry: float) -> None:
        left, top = self.at(x - rx, y + ry, z)
        right, bottom = self.at(x + rx, y - ry, z)
        self.pen.ellipse([left, top, max(left, right), max(top, bottom)], fill=self.fill(name, variant))

    def count_if_visible(self, name: str, x: float, y: float, z: float) -> None:
        u, v = self.at(x, y, z)
        self.seen[name] += 0 <= u < SIZE and 0 <= v < SIZE

    def sky(self, sunny: bool, rng: np.random.Generator) -> None:
        """Sky as a gradient of bands, then clouds."""
        band = self.street.horizon / VARIANTS
        for v in range(VARIANTS):
            self.pen.rectangle([0, v * band, SIZE, (v + 1) * band + 1], fill=self.fill("sky", v))
        for _ in range(rng.integers(0, 3) if sunny else rng.integers(5, 9)):
            cx, cy = rng.uniform(0, SIZE), rng.uniform(0, self.street.horizon * 0.7)
            rx, ry = rng.uniform(15, 45), rng.uniform(6, 14)
            self.pen.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=self.fill("cloud"))

    def ground(self) -> None:
        """Pavements, verges, road, cycle lanes and the dashed centre line."""
        st = self.street
        for side, sign in enumerate(SIGN):
            self.strip("pavement", sign * (st.road + st.verge[side]), sign * st.facade(side))
            if st.verge[side]:
                self.strip("grass", sign * st.road, sign * (st.road + st.verge[side]))
        self.strip("road", -st.road, st.road)
        for side, sign in enumerate(SIGN):
            if st.cycle[side]:
                self.strip("cycle_lane", sign * (st.road - 1.8), sign * st.road)
        for z in np.arange(5.0, st.far, 9.0):
            self.strip("marking", -0.08, 0.08, z, z + 3.0)

    def buildings(self, rng: np.random.Generator) -> None:
        """The far end's facade, then a row of buildings on each side with windows, shops and graffiti."""
        st = self.street
        self.upright("facade", int(rng.integers(VARIANTS)), -st.facade(0), st.facade(1), 0, st.height, st.far)
        segments = []
        for side, sign in enumerate(SIGN):
            starts = np.cumsum(rng.uniform(6, 14, 16)) - 10.0
            starts = np.r_[2.0, starts[(starts > 2.0) & (starts < st.far)], st.far]
            for z0, z1 in zip(starts[:-1], starts[1:]):
                segments.append((sign * st.facade(side), z0, z1, st.height * rng.uniform(0.75, 1.25)))
        shops = set(rng.choice(len(segments), min(len(segments), rng.binomial(4, st.p["commerce"])), replace=False))
        for number, (x, z0, z1, height) in enumerate(segments):
            self.wall("facade", int(rng.integers(VARIANTS)), x, 0, height, z0, z1)
            self._windows(x, z0, z1, height, number in shops)
            if number in shops:
                self._shop(x, z0, z1, int(rng.integers(VARIANTS)))
        for _ in range(rng.binomial(4, st.p["disorder"])):
            self._graffiti(segments[rng.integers(len(segments))], rng)

    def _windows(self, x: float, z0: float, z1: float, height: float, shop: bool) -> None:
        for floor in range(1 if shop else 0, int(height // 3)):
            for z in np.arange(z0 + 1.0, z1 - 1.3, 3.0):
                if abs(self.at(x, 0, z)[0] - self.at(x, 0, z + 1.3)[0]) < 1.2:
                    continue
                self.wall("window", floor % 3, x, 3 * floor + 1.0, 3 * floor + 2.4, z, z + 1.3)

    def _shop(self, x: float, z0: float, z1: float, variant: int) -> None:
        self.wall("window", 1, x, 0.4, 2.6, z0 + 0.5, z1 - 0.5)
        self.wall("shop", variant, x, 2.6, 3.2, z0 + 0.3, z1 - 0.3)
        self.count_if_visible("shop", x, 1.5, (z0 + z1) / 2)

    def _graffiti(self, segment, rng: np.random.Generator) -> None:
        x, z0, z1, _ = segment
        z = rng.uniform(z0, max(z0, z1 - 2.0))
        points = [self.at(x, rng.uniform(0.3, 2.4), z + d) for d in np.linspace(0, 2.0, 6)]
        width = max(1, int(0.08 * self.pxm * Z_BOTTOM / z))
        self.pen.line(points, fill=self.fill("graffiti", int(rng.integers(VARIANTS))), width=width)
        self.count_if_visible("graffiti", x, 1.2, z + 1.0)

    def objects(self, rng: np.random.Generator) -> None:
        """Trees, cars, people, lamps and litter, drawn from far to near."""
        st, p, far = self.street, self.street.p, self.street.far
        items: list[tuple[float, Callable[..., None], tuple[float, ...]]] = []
        for side, sign in enumerate(SIGN):
            tree_x = sign * (st.road + (st.verge[side] / 2 if st.verge[side] else 0.6))
            items += [(z, self._tree, (tree_x,)) for z in rng.uniform(6, 0.8 * far, rng.binomial(5, p["green"]))]
        for _ in range(rng.binomial(6, p["traffic"])):
            side = int(rng.integers(2))
            parked = st.road - 1.1 - 1.8 * st.cycle[side]
            x = SIGN[side] * (parked if rng.random() < 0.6 else st.road / 2)
            items.append((rng.uniform(6, 0.8 * far), self._car, (x, int(rng.integers(VARIANTS)))))
        for _ in range(rng.binomial(8, p["activity"])):
            side = int(rng.integers(2))
            x = SIGN[side] * (st.road + st.verge[side] + rng.uniform(0.3, st.pavement[side] - 0.3))
            items.append((rng.uniform(5, 0.7 * far), self._person, (x, int(rng.integers(VARIANTS - 1)))))
        for _ in range(rng.binomial(4, p["lighting"])):
            side = int(rng.integers(2))
            items.append((rng.uniform(6, 0.8 * far), self._lamp, (SIGN[side] * (st.road + st.verge[side] + 0.3),)))
        for _ in range(rng.binomial(6, p["disorder"])):
            side = int(rng.integers(2))
            x = SIGN[side] * (st.road + st.verge[side] + rng.uniform(0.2, st.pavement[side]))
            items.append((rng.uniform(5, 0.5 * far), self._litter, (x, int(rng.integers(VARIANTS)))))
        for z, draw, args in sorted(items, key=lambda item: -item[0]):
            draw(z, *args)

    def _tree(self, z: float, x: float) -> None:
        self.upright("trunk", int(z) % 2, x - 0.2, x + 0.2, 0, 3.8, z)
        self.ellipse("foliage", int(z * 7) % 4, x, 5.6, z, 2.3, 2.1)

    def _car(self, z: float, x: float, variant: int) -> None:
        for dx in (-0.7, 0.7):
            self.upright("wheel", 0, x + dx - 0.16, x + dx + 0.16, 0, 0.35, z)
        self.upright("car", variant, x - 0.9, x + 0.9, 0.3, 1.1, z)
        self.upright("car", variant, x - 0.75, x + 0.75, 1.1, 1.6, z)
        self.upright("glass", 0, x - 0.6, x + 0.6, 1.15, 1.5, z)
        self.count_if_visible("car", x, 0.8, z)

    def _person(self, z: float, x: float, variant: int) -> None:
        self.upright("person", variant, x - 0.22, x + 0.22, 0, 1.45, z)
        self.ellipse("person", VARIANTS - 1, x, 1.62, z, 0.13, 0.15)
        self.count_if_visible("person", x, 1.0, z)

    def _lamp(self, z: float, x: float) -> None:
        self.upright("lamp", 0, x - 0.06, x + 0.06, 0, 5.5, z)
        self.ellipse("lamp", 1, x, 5.6, z, 0.3, 0.2)
        self.count_if_visible("lamp", x, 3.0, z)

    def _litter(self, z: float, x: float, variant: int) -> None:
        self.ellipse("litter", variant, x, 0.08, z, 0.3, 0.08)
        self.count_if_visible("litter", x, 0.0, z)
