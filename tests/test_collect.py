"""``percept collect`` against a loopback Mapillary stand-in serving real vector tiles and entity JSON, with
the thumbnails on a second loopback server (another port, as Mapillary's live on other hosts)."""

from __future__ import annotations

import json
import math
from itertools import chain

import numpy as np
import pandas as pd
import pytest
from http_standin import StandIn
from mapillary_standin import TILE_PREFIX, FakeImage, MapillaryStandIn, jpeg_for

from percept.categories import CATEGORIES
from percept.city.collect import CollectOptions, MapillarySource
from percept.city.download import DownloadError, HttpFetcher
from percept.city.mapillary import redact
from percept.city.retry import RetryPolicy
from percept.city.selection import Selection, select_images
from percept.city.tiles import Bbox, CoverageImage, decode_image_tile, parse_bbox, tile_lonlat, tile_xy, tiles_covering
from percept.cli.main import main as percept_main
from percept.data.embeddings import write_part
from percept.data.images import find_images
from percept.data.locations import read_locations
from percept.model.io import ModelSettings, save_model
from percept.model.knn import l2_normalise

TOKEN = "MLY|test|secret"
BBOX = "4.8945,52.3600,4.9020,52.3740"
M_PER_DEG_LAT = 111_195.0
DAY_MS = 86_400_000
T2019, T2021, T2023 = 1_556_668_800_000, 1_622_505_600_000, 1_685_577_600_000  # 1 May 2019, 1 Jun 2021, 1 Jun 2023
FAST = ["--retries", "3", "--backoff", "0.01", "--timeout", "5", "--quiet"]


def scene() -> list[FakeImage]:
    """seqA: 10 images 10 m apart going north (2021); seqB: 6 panoramas 20 m apart going east across a tile
    edge (2019); seqC: 4 images 5 m apart (2023), one not yet processed; one image west of the box."""
    lon_step = 20.0 / (M_PER_DEG_LAT * math.cos(math.radians(52.371)))
    images = [FakeImage(1000 + i, 4.8950, 52.3700 + i * 10.0 / M_PER_DEG_LAT, T2021 + i * 2000, 10.0 * i, "seqA")
              for i in range(10)]
    images += [FakeImage(2000 + i, 4.8990 + i * lon_step, 52.3710, T2019 + i * 3000, 90.0, "seqB", is_pano=True)
               for i in range(6)]
    images += [FakeImage(3000 + i, 4.8960 + i * 5.0 * lon_step / 20.0, 52.3720, T2023 + i * 1000, 270.0, "seqC",
                         computed_shift=None if i == 2 else 1e-5) for i in range(4)]
    images.append(FakeImage(4000, 4.8940, 52.3700, T2021, 0.0, "seqD"))
    return images[::-1]  # tiles list images in no particular order


@pytest.fixture
def mapillary_hosts():
    """The stand-in, its Graph API and tiles server, the images by id, and the thumbnail server."""
    images = scene()
    busy = {"/1005", "/maps/vtp/mly1_public/2/14/8414/5384"}
    standin = MapillaryStandIn(images, TOKEN, expire_once={1003, 2004}, busy_once=busy, forbidden_tiles={(8414, 5385)})
    with StandIn(standin) as server, StandIn(standin) as thumbs:
        standin.base_url, standin.thumb_base_url = server.url, thumbs.url
        yield standin, server, {str(image.id): image for image in images}, thumbs


@pytest.fixture
def mapillary(mapillary_hosts):
    return mapillary_hosts[:3]


def run_collect(server, out, *extra, token=TOKEN) -> int:
    return percept_main(["collect", "--bbox", BBOX, "-o", str(out), "--api-url", server.url, "--tiles-url",
                         server.url, "--mapillary-token", token, *FAST, *extra])


def read_rows(out) -> pd.DataFrame:
    return pd.read_csv(out / "locations.csv", dtype={"sequence": str, "image": str})


def test_collects_every_image_in_the_box(tmp_path, mapillary):
    standin, server, images = mapillary
    assert run_collect(server, tmp_path / "city") == 0

    expected = sorted(i for i in images if i != "4000")
    rows = read_rows(tmp_path / "city")
    assert list(rows.columns) == ["image", "lon", "lat", "angle", "sequence", "captured_at", "is_pano"]
    assert rows["image"].tolist() == [f"{i}.jpg" for i in expected]
    assert sorted(p.name for p in (tmp_path / "city" / "images").iterdir()) == [f"{i}.jpg" for i in expected]
    for image_id in expected:
        assert (tmp_path / "city" / "images" / f"{image_id}.jpg").read_bytes() == jpeg_for(int(image_id), "1024")
    by_id = rows.set_index(rows["image"].str[:-4])
    for image_id in expected:
        image, row = images[image_id], by_id.loc[image_id]
        shift = image.computed_shift or 0.0
        assert row["lon"] == image.lon and row["lat"] == pytest.approx(image.lat + shift, abs=1e-12)
        assert row["angle"] == ((image.compass_angle + 1) % 360 if image.computed_shift else image.compass_angle)
        assert row["sequence"] == image.sequence_id and row["is_pano"] == image.is_pano
        assert pd.Timestamp(row["captured_at"]).value // 1_000_000 == image.captured_at
    assert standin.signatures["1003"] == standin.signatures["2004"] == 2  # expired thumbnail URLs asked again
    assert server.count("/1005") == 2 and server.count("/maps/vtp/mly1_public/2/14/8414/5384") == 2  # 429 once
    assert all("authorization" not in headers for headers in standin.thumb_headers)
    assert set(standin.entity_fields) == {"id,thumb_1024_url,computed_geometry,geometry,compass_angle,"
                                          "computed_compass_angle,captured_at,is_pano,sequence"}
    assert pd.read_csv(tmp_path / "city" / "failed.csv").empty


def test_filters_and_spacing(tmp_path, mapillary):
    standin, server, images = mapillary
    out = tmp_path / "city"
    assert run_collect(server, out, "--spacing", "25", "--since", "2020-01-01", "--no-panoramas") == 0
    rows = read_rows(out)
    # seqA 10 m apart → every third image (0, 30, 60, 90 m); seqC spans 15 m → its first only; no 2019 panoramas
    assert rows["image"].tolist() == ["1000.jpg", "1003.jpg", "1006.jpg", "1009.jpg", "3000.jpg"]
    for _, walk in rows.sort_values("captured_at").groupby("sequence"):
        lat = walk["lat"].to_numpy()
        assert np.all(np.diff(lat) * M_PER_DEG_LAT >= 25)

    out2 = tmp_path / "panoramas"
    assert run_collect(server, out2, "--spacing", "30", "--since", "2019-01-01", "--size", "2048") == 0
    rows = read_rows(out2)
    seq_b = rows[rows["sequence"] == "seqB"]
    assert seq_b["image"].tolist() == ["2000.jpg", "2002.jpg", "2004.jpg"] and seq_b["is_pano"].all()
    assert (out2 / "images" / "2002.jpg").read_bytes() == jpeg_for(2002, "2048")


def test_rerun_resumes(tmp_path, mapillary):
    standin, server, _ = mapillary
    out = tmp_path / "city"
    assert run_collect(server, out) == 0
    (out / "images" / "1007.jpg").unlink()
    rows = read_rows(out)
    rows[rows["image"] != "3001.jpg"].to_csv(out / "locations.csv", index=False)
    (out / "images" / ".1008.jpg.x1y2z3.tmp").write_bytes(b"half an image")
    thumbs, entities = len(standin.thumb_headers), sum(standin.signatures.values())

    assert run_collect(server, out) == 0
    assert len(standin.thumb_headers) - thumbs == 1  # only the deleted image is downloaded again
    assert sum(standin.signatures.values()) - entities == 2  # its entity, and the one whose row was lost
    assert read_rows(out)["image"].tolist() == rows["image"].tolist()
    assert not list((out / "images").glob(".*"))


def test_locations_feed_the_rating(tmp_path, mapillary):
    _, server, images = mapillary
    out = tmp_path / "city"
    assert run_collect(server, out) == 0
    locations = read_locations(out / "locations.csv")
    assert len(locations) == len(images) - 1
    found = locations.lookup(["1003.jpg"])
    assert found["lon"].iloc[0] == images["1003"].lon and found["sequence"].iloc[0] == "seqA"

    rng = np.random.default_rng(0)
    vectors = l2_normalise(rng.normal(size=(40, 64)))
    model = tmp_path / "model.npz"
    save_model(model, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 40) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5))
    names = [image.key for image in find_images(out / "images")]
    write_part(tmp_path / "emb", "img", 0, l2_normalise(rng.normal(size=(len(names), 64))).astype(np.float16),
               pd.DataFrame({"image_path": [str(out / "images" / name) for name in names]}))
    rated = tmp_path / "rated.geojson"
    assert percept_main(["rate", "--model", str(model), "--embeddings", str(tmp_path / "emb"), "--locations",
                         str(out / "locations.csv"), "--out", str(rated), "--quiet"]) == 0
    features = json.loads(rated.read_text())["features"]
    assert len(features) == len(images) - 1
    rows = read_rows(out).set_index("image")
    for feature in features:
        name = feature["properties"]["image"].rsplit("/", 1)[-1]
        assert feature["geometry"]["coordinates"] == [rows.loc[name, "lon"], rows.loc[name, "lat"]]
        assert 1 <= feature["properties"]["walkability"] <= 5


@pytest.mark.parametrize("args, message", [
    (["--bbox", "4.9,52.4,4.8,52.3"], "west < east"),
    (["--bbox", "4.9,52.4"], "four numbers"),
    (["--since", "last year"], "YYYY-MM-DD"),
])
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    command = ["collect", "--bbox", BBOX, "-o", str(tmp_path / "x"), "--mapillary-token", TOKEN, *args]
    assert percept_main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_and_refused_token(tmp_path, capsys, monkeypatch, mapillary):
    _, server, _ = mapillary
    monkeypatch.delenv("MAPILLARY_TOKEN", raising=False)
    assert percept_main(["collect", "--bbox", BBOX, "-o", str(tmp_path / "x")]) == 2
    assert "--mapillary-token or set MAPILLARY_TOKEN" in capsys.readouterr().err
    assert run_collect(server, tmp_path / "x", token="wrong") == 2
    err = capsys.readouterr().err
    assert "refused the access token" in err and "wrong" not in err and err.count("\n") == 1


def test_no_coverage_exits_one(tmp_path, capsys, mapillary):
    _, server, _ = mapillary
    assert percept_main(["collect", "--bbox", "5.5,52.0,5.51,52.01", "-o", str(tmp_path / "x"), "--api-url",
                         server.url, "--tiles-url", server.url, "--mapillary-token", TOKEN, "--quiet"]) == 1
    assert "no Mapillary coverage" in capsys.readouterr().err


def test_tile_math_round_trips_and_decodes_positions(mapillary):
    standin, _, images = mapillary
    for lon, lat in [(4.895, 52.37), (-122.4194, 37.7749), (151.2093, -33.8688)]:
        x, y = tile_xy(lon, lat)
        assert tile_lonlat(x, y) == pytest.approx((lon, lat), abs=1e-9)
    assert tiles_covering(Bbox(4.8945, 52.3600, 4.9020, 52.3740)) == [(8414, 5384), (8415, 5384),
                                                                      (8414, 5385), (8415, 5385)]
    half_unit = 360 / 2 ** 14 / 4096 / 2  # tile coordinates are whole numbers out of 4096
    decoded = [image for (x, y), data in standin.tiles.items() for image in decode_image_tile(data, x, y)]
    assert sorted(image.id for image in decoded) == sorted(images)
    for image in decoded:
        truth = images[image.id]
        assert abs(image.lon - truth.lon) <= half_unit and abs(image.lat - truth.lat) <= half_unit  # ≤ 0.2 m
        assert (image.captured_at, image.sequence, image.is_pano) == (truth.captured_at, truth.sequence_id,
                                                                     truth.is_pano)


def test_spacing_keeps_first_and_walks_in_capture_order():
    step = 10.0 / M_PER_DEG_LAT
    walk = [CoverageImage(str(i), 5.0, 52.0 + i * step, 1000 - i, None, "s", False) for i in range(7)]
    chosen = select_images(walk, Selection(Bbox(4, 51, 6, 53), spacing_m=25))
    assert [image.id for image in chosen] == ["6", "3", "0"]  # captured last-to-first along the street


def test_the_token_stays_with_the_graph_api(tmp_path, capsys, mapillary_hosts):
    _, server, images, thumbs = mapillary_hosts
    out = tmp_path / "city"
    assert percept_main(["collect", "--bbox", BBOX, "-o", str(out), "--api-url", server.url, "--tiles-url",
                         server.url, "--mapillary-token", TOKEN, *FAST[:-1]]) == 0  # not --quiet: messages checked
    entities = [r for r in server.requests if r.path.strip("/").isdigit()]
    tiles = [r for r in server.requests if r.path.startswith(TILE_PREFIX)]
    assert len({r.path for r in entities}) == len(images) - 1 and len({r.path for r in tiles}) == 4
    assert len(server.requests) == len(entities) + len(tiles)  # no thumbnail was asked of the API host
    assert all(r.headers.get("authorization") == f"OAuth {TOKEN}" and "access_token" not in r.query
               for r in entities)
    assert all("authorization" not in r.headers and r.query["access_token"] == [TOKEN] for r in tiles)
    assert len(thumbs.requests) == len(images) - 1 + 2  # two expired signatures asked again
    for request in thumbs.requests:
        assert "authorization" not in request.headers and "access_token" not in request.query
        assert not any(TOKEN in value or "secret" in value
                       for value in [request.path, *request.headers.values(), *chain(*request.query.values())])
    err = capsys.readouterr().err
    written = "".join(path.read_text() for path in (out / "locations.csv", out / "failed.csv"))
    assert "secret" not in err + written and "downloaded" in err


def test_plain_http_thumbnails_are_refused_when_the_api_is_https(tmp_path, mapillary_hosts):
    standin, _, _, thumbs = mapillary_hosts
    options = CollectOptions(Selection(parse_bbox(BBOX)), TOKEN, api_url="https://graph.invalid",
                             policy=RetryPolicy(tries=1, timeout=5))
    with HttpFetcher(options.policy) as api, HttpFetcher(options.policy) as downloads:
        source = MapillarySource(api, downloads, options)
        standin.signatures["1000"] = 1
        entity = {"thumb_1024_url": f"{thumbs.url}/thumb/1000/1024?sig=1"}
        with pytest.raises(DownloadError, match="refused a plain-http download while the Mapillary API is https"):
            source.thumbnail("1000", entity, tmp_path / "1000.jpg")
    assert thumbs.requests == [] and not (tmp_path / "1000.jpg").exists()


def test_failures_never_show_the_token(mapillary_hosts):
    _, server, _, _ = mapillary_hosts
    options = CollectOptions(Selection(parse_bbox(BBOX)), TOKEN, api_url=server.url, tiles_url="http://127.0.0.1:9",
                             policy=RetryPolicy(tries=1, timeout=5))
    with HttpFetcher(options.policy) as api, HttpFetcher(options.policy) as downloads:
        source = MapillarySource(api, downloads, options)
        with pytest.raises(DownloadError) as refused:
            source.tile((8414, 5384))
    assert "connection failed" in refused.value.reason and "secret" not in refused.value.reason
    assert redact(f"GET /x?access_token=MLY%7Ctest%7Csecret failed for {TOKEN}", TOKEN) == \
        "GET /x?access_token=*** failed for ***"
