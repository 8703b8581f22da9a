"""Batch rating: output formats, chunking, panoramic averaging, locations and environmental models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from percept.categories import CATEGORIES
from percept.city.rating import rate
from percept.cli.main import main as percept_main
from percept.data.embeddings import write_part
from percept.data.locations import read_locations
from percept.data.rated_points import read_rated
from percept.errors import PerceptError
from percept.model.io import ModelSettings, load_model, save_model
from percept.model.knn import KNNRegressor, l2_normalise

DIM = 12


def unit(rng, n, dim=DIM):
    return l2_normalise(rng.normal(size=(n, dim)))


@pytest.fixture
def model_path(tmp_path):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 80)
    path = tmp_path / "model.npz"
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 80) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=7))
    return path


def write_embeddings(folder, names, vectors, part_size):
    for part, start in enumerate(range(0, len(names), part_size)):
        write_part(folder, "img", part, vectors[start:start + part_size],
                   pd.DataFrame({"image_path": [f"/data/{n}" for n in names[start:start + part_size]]}))
    return folder


@pytest.fixture
def city(tmp_path):
    """23 images in 3 parts, and their locations as CSV."""
    rng = np.random.default_rng(1)
    names = [f"img_{i}.jpg" for i in range(23)]
    vectors = unit(rng, 23).astype(np.float16)
    folder = write_embeddings(tmp_path / "emb", names, vectors, 10)
    locations = tmp_path / "locations.csv"
    rows = [f"{n},{4.9 + i * 1e-3},{52.37 + i * 1e-3},{i * 10},seq{i % 2}" for i, n in enumerate(names[:-1])]
    locations.write_text("image,lon,lat,angle,sequence\n" + "\n".join(rows) + "\n")
    return folder, names, vectors, locations


def expected_scores(model_path, vectors):
    model = load_model(model_path)
    queries = l2_normalise(np.asarray(vectors, dtype=np.float64))
    return np.column_stack([KNNRegressor(7).fit(model.vectors[c], model.scores[c]).predict(queries)
                            for c in CATEGORIES])


def test_csv_scores_equal_knn_for_every_chunk_size(tmp_path, model_path, city):
    folder, names, vectors, _ = city
    tables = []
    for chunk in (1, 7, len(names)):
        out = tmp_path / f"rated_{chunk}.csv"
        summary = rate(load_model(model_path), folder, out, chunk_size=chunk, quiet=True)
        assert summary.rows == len(names)
        tables.append(pd.read_csv(out))
    assert tables[0]["image"].tolist() == names
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0])
    np.testing.assert_allclose(tables[0][list(CATEGORIES)].to_numpy(), expected_scores(model_path, vectors),
                               rtol=0, atol=1e-12)


def test_parquet_without_locations(tmp_path, model_path, city):
    folder, names, vectors, _ = city
    out = tmp_path / "rated.parquet"
    rate(load_model(model_path), folder, out, chunk_size=5, quiet=True)
    table = pd.read_parquet(out)
    assert list(table.columns) == ["image", *CATEGORIES, *(f"{c}_sd" for c in CATEGORIES),
                                   "best_similarity", "dissimilarity", "out_of_domain", "in_survey"]
    np.testing.assert_allclose(table[list(CATEGORIES)].to_numpy(), expected_scores(model_path, vectors),
                               rtol=0, atol=1e-12)


def test_geoparquet_with_locations(tmp_path, model_path, city):
    folder, names, _, locations = city
    out = tmp_path / "rated.parquet"
    summary = rate(load_model(model_path), folder, out, locations=read_locations(locations), chunk_size=4, quiet=True)
    assert summary.without_location == 1
    geo = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    table = pd.read_parquet(out)
    point = table["geometry"].iloc[3]
    assert point[:5] == b"\x01\x01\x00\x00\x00"
    assert np.frombuffer(point[5:], "<f8").tolist() == [table["lon"].iloc[3], table["lat"].iloc[3]]
    assert table["geometry"].iloc[-1] is None
    assert table["sequence"].iloc[1] == "seq1" and table["angle"].iloc[2] == 20
    columns = pq.ParquetFile(out).metadata.row_group(0)
    dictionary = {columns.column(i).path_in_schema for i in range(columns.num_columns)
                  if any("DICTIONARY" in encoding for encoding in columns.column(i).encodings)}
    assert dictionary == {"sequence"}  # only the text that repeats: not the names, nor the scores
    rated = read_rated(out)
    assert len(rated.lon) == len(names) - 1 and rated.categories == list(CATEGORIES)


def test_geoparquet_records_its_crs_for_geopandas(tmp_path, model_path, city):
    """The points are WGS84, longitude first: geopandas reads them as EPSG:4326, not the CRS84 default."""
    geopandas = pytest.importorskip("geopandas")
    folder, _, _, locations = city
    out = tmp_path / "rated.geoparquet"
    rate(load_model(model_path), folder, out, locations=read_locations(locations), quiet=True)
    frame = geopandas.read_parquet(out)
    assert frame.crs.to_epsg() == 4326
    located = frame[frame.geometry.notna()]
    np.testing.assert_array_equal(located.geometry.x.to_numpy(), located["lon"].to_numpy())


def test_geojson_with_locations(tmp_path, model_path, city):
    folder, names, vectors, locations = city
    out = tmp_path / "rated.geojson"
    rate(load_model(model_path), folder, out, locations=read_locations(locations), chunk_size=6, quiet=True)
    data = json.loads(out.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == len(names)
    first = data["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [4.9, 52.37]}
    assert first["properties"]["walkability"] == pytest.approx(expected_scores(model_path, vectors)[0, 0], abs=1e-12)
    assert data["features"][-1]["geometry"] is None
    assert len(read_rated(out).lon) == len(names) - 1


def test_csv_with_locations_round_trips(tmp_path, model_path, city):
    folder, names, _, locations = city
    out = tmp_path / "rated.csv"
    rate(load_model(model_path), folder, out, locations=read_locations(locations), quiet=True)
    rated = read_rated(out)
    assert rated.names[0] == "img_0.jpg" and rated.lat[0] == pytest.approx(52.37)


def test_geojson_needs_locations(tmp_path, model_path, city):
    with pytest.raises(PerceptError, match="needs image locations"):
        rate(load_model(model_path), city[0], tmp_path / "rated.geojson", quiet=True)
    with pytest.raises(PerceptError, match="must end in"):
        rate(load_model(model_path), city[0], tmp_path / "rated.xlsx", quiet=True)
    assert not (tmp_path / "rated.geojson").exists()


def test_panoramic_crops_are_averaged(tmp_path, model_path):
    rng = np.random.default_rng(2)
    names = ["p1_x0.jpg", "p1_x1.jpg", "p1_x2.jpg", "p2_x0.jpg", "solo.jpg", "p2_x1.jpg", "p1_x3.jpg"]
    vectors = unit(rng, len(names)).astype(np.float16)
    folder = write_embeddings(tmp_path / "emb", names, vectors, 3)
    crops = l2_normalise(np.asarray(vectors, dtype=np.float64))
    panoramas = {"p1": crops[[0, 1, 2, 6]].mean(axis=0), "p2": crops[[3, 5]].mean(axis=0), "solo.jpg": crops[4]}
    results = []
    for chunk in (1, 7, 100):
        out = tmp_path / f"pano_{chunk}.csv"
        rate(load_model(model_path), folder, out, average_panoramic=True, chunk_size=chunk, quiet=True)
        results.append(pd.read_csv(out).set_index("image").sort_index())
    table = results[0]
    assert table["crops"].to_dict() == {"p1": 4, "p2": 2, "solo.jpg": 1}
    for other in results[1:]:
        pd.testing.assert_frame_equal(other, table)
    want = expected_scores(model_path, np.stack([panoramas[n] for n in table.index]))
    np.testing.assert_allclose(table[list(CATEGORIES)].to_numpy(), want, rtol=0, atol=1e-12)


def test_panorama_locations_fall_back_to_a_crop(tmp_path, model_path):
    rng = np.random.default_rng(3)
    folder = write_embeddings(tmp_path / "emb", ["a_x0.jpg", "a_x1.jpg"], unit(rng, 2).astype(np.float16), 5)
    locations = tmp_path / "loc.csv"
    locations.write_text("name,longitude,latitude\na_x0.jpg,4.9,52.3\n")
    out = tmp_path / "pano.geojson"
    rate(load_model(model_path), folder, out, locations=read_locations(locations), average_panoramic=True, quiet=True)
    feature = json.loads(out.read_text())["features"][0]
    assert feature["properties"]["image"] == "a" and feature["geometry"]["coordinates"] == [4.9, 52.3]


def test_environmental_model_needs_its_text_vectors(tmp_path, city):
    folder, names, vectors, _ = city
    rng = np.random.default_rng(4)
    combined = unit(rng, 40, 2 * DIM)
    path = tmp_path / "env.npz"
    save_model(path, {c: combined for c in CATEGORIES}, {c: rng.uniform(1, 5, 40) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5, environmental_method="append", prompt_style=0))
    with pytest.raises(PerceptError, match="environmental"):
        rate(load_model(path), folder, tmp_path / "out.csv", quiet=True)
    texts = unit(rng, len(names)).astype(np.float16)
    for part, start in enumerate(range(0, len(names), 8)):
        write_part(tmp_path / "text", "text", part, texts[start:start + 8],
                   pd.DataFrame({"caption": ["prompt"] * len(texts[start:start + 8])}))
    rate(load_model(path), folder, tmp_path / "out.csv", text_dir=tmp_path / "text", chunk_size=5, quiet=True)
    queries = np.concatenate([l2_normalise(vectors), l2_normalise(texts)], axis=1)
    model = load_model(path)
    want = KNNRegressor(5).fit(model.vectors["safety"], model.scores["safety"]).predict(l2_normalise(queries))
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["safety"], want, rtol=0, atol=1e-12)


def test_dimension_mismatch_is_refused(tmp_path, model_path):
    rng = np.random.default_rng(5)
    folder = write_embeddings(tmp_path / "emb", ["a.jpg"], unit(rng, 1, 5).astype(np.float16), 5)
    with pytest.raises(PerceptError, match="dimensions"):
        rate(load_model(model_path), folder, tmp_path / "out.csv", quiet=True)


@pytest.mark.parametrize("content,message", [
    ("image,lon\na.jpg,4.9\n", "needs an image name column"),
    ("image,lon,lat\na.jpg,4.9,north\n", "a number between -90 and 90"),
    ("image,lon,lat\na.jpg,200,52\n", "between -180 and 180"),
])
def test_malformed_location_csv(tmp_path, content, message):
    path = tmp_path / "loc.csv"
    path.write_text(content)
    with pytest.raises(PerceptError, match=message):
        read_locations(path)


def test_location_geojson(tmp_path):
    path = tmp_path / "loc.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [4.9, 52.3]},
         "properties": {"image_path": "x/b.jpg", "compass_angle": 90, "sequence_id": "s"}}]}))
    found = read_locations(path).lookup(["other/b.jpg", "missing.jpg"])
    assert found.iloc[0].tolist() == [4.9, 52.3, 90.0, "s"] and np.isnan(found["lon"].iloc[1])
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{"geometry": None, "properties": {}}]}))
    with pytest.raises(PerceptError, match="feature 0 needs a Point"):
        read_locations(path)


def test_rate_command(tmp_path, model_path, city, capsys):
    folder, names, _, locations = city
    out = tmp_path / "cli.geojson"
    code = percept_main(["rate", "--model", str(model_path), "--embeddings", str(folder), "--out", str(out),
                         "--locations", str(locations), "--chunk-size", "4"])
    assert code == 0 and "rated 23 images (1 without a location)" in capsys.readouterr().err
    assert percept_main(["rate", "--model", str(model_path), "--embeddings", str(folder),
                         "--out", str(tmp_path / "x.geojson"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: .geojson output needs image locations")


def test_rate_command_encodes_images(tmp_path, capsys):
    from PIL import Image
    from web_fixtures import write_model

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (60 * i, 90, 200)).save(images / f"pano_x{i}.jpg")
    model = write_model(tmp_path / "model.npz", names=False)
    out = tmp_path / "rated.csv"
    assert percept_main(["rate", "--model", str(model), "--images", str(images), "--cache", str(tmp_path / "cache"),
                         "--out", str(out), "--average-panoramic", "--quiet"]) == 0
    table = pd.read_csv(out)
    assert table["image"].tolist() == ["pano"] and table["crops"].tolist() == [3]
    assert (tmp_path / "cache" / "img_emb" / "img_emb_0.npy").exists()
