"""Rating on Ray Data: workers read their own rows, score them and write their parts of the output; the
driver plans the work units and joins the parts into the local engine's file, byte for byte.

Work units are checked without Ray too (each unit rated apart, the parts joined, gives the local file).
On Ray: every output format, panoramas, intervals and zero vectors against the local engine; a worker's
failure as the local engine's one-line error; a driver killed mid-run resumed from its parts; and, on a
two-node cluster, a node lost mid-run costing nothing but time.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray_two_nodes import two_nodes  # noqa: F401 - the module fixture

from percept.categories import CATEGORIES
from percept.city import rating, rating_plan
from percept.city.rated_parts import RatedParts
from percept.cli.main import main as percept_main
from percept.data.embeddings import write_part
from percept.data.locations import location_key, panorama_id, read_locations
from percept.data.parquet_concat import NotJoinable, join_parquet
from percept.data.rated_points import rated_schema
from percept.engines import EngineOptions, rate
from percept.errors import PerceptError
from percept.model.conformal import Calibration
from percept.model.estimates import interval_level
from percept.model.io import ModelSettings, load_model, save_model
from percept.model.knn import l2_normalise

ROOT = Path(__file__).resolve().parent.parent
DIM = 12
#: The local engine on the CPU (the Ray runs score on CPUs too, so the files are comparable on any machine).
CPU = EngineOptions(device="cpu")
ON_RAY = EngineOptions("ray", workers=2, device="cpu")


def _unit_rows(rng, count: int, dim: int = DIM) -> np.ndarray:
    """Unit vectors in a cone around the first axis, as photos' vectors cluster."""
    return l2_normalise(rng.normal(size=(count, dim)) + 3 * np.eye(dim)[0])


def _model(path: Path, samples: int = 60, dim: int = DIM) -> Path:
    """A calibrated model (prediction intervals) of named survey images, two ratings per image."""
    rng = np.random.default_rng(0)
    vectors = _unit_rows(rng, samples, dim)
    rows = np.repeat(np.arange(samples), 2)
    names = [f"survey_{i}.jpg" for i in range(samples)]
    calibration = {c: Calibration(np.sort(rng.uniform(0.1, 2.0, 99)), 0.2 + 0.1 * n) for n, c in enumerate(CATEGORIES)}
    save_model(path, {c: vectors[rows] for c in CATEGORIES}, {c: rng.uniform(1, 5, len(rows)) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5, calibration={"folds": 5}),
               {c: [names[r] for r in rows] for c in CATEGORIES}, calibration=calibration)
    return path


def _city(folder: Path, panoramas: int, part_size: int, dim: int = DIM, far: bool = False) -> tuple[Path, list[str]]:
    """Embeddings of ``panoramas`` panoramas of three crops each (stored together), every tenth a survey image
    instead, and one zero vector; with ``far``, one more panorama whose crops lie at the start and the end."""
    rng = np.random.default_rng(1)
    names = []
    for number in range(panoramas):
        survey = number % 10 == 3
        names += [f"survey_{number // 10 % 60}.jpg"] if survey else [f"pano{number}_x{c}.jpg" for c in range(3)]
    if far:
        names = ["far_x0.jpg", *names, "far_x1.jpg"]
    vectors = _unit_rows(rng, len(names), dim).astype(np.float16)
    vectors[7] = 0
    for part, start in enumerate(range(0, len(names), part_size)):
        write_part(folder, "img", part, vectors[start:start + part_size],
                   pd.DataFrame({"image_path": [f"/data/{n}" for n in names[start:start + part_size]]}))
    return folder, names


def _environmental_model(path: Path) -> Path:
    """A model whose vectors are image vectors with their prompt's text vector appended."""
    rng = np.random.default_rng(5)
    vectors = l2_normalise(np.hstack([_unit_rows(rng, 60), _unit_rows(rng, 60)]))
    save_model(path, {c: vectors for c in CATEGORIES}, {c: rng.uniform(1, 5, 60) for c in CATEGORIES},
               ModelSettings(clip_model="percept:tiny", k=5, environmental_method="append", prompt_style=0))
    return path


def _texts(folder: Path, count: int) -> Path:
    """Prompt vectors for ``count`` images in parts of 8 rows (the image parts hold 37), one of them zero."""
    vectors = _unit_rows(np.random.default_rng(6), count).astype(np.float16)
    vectors[100] = 0
    for part, start in enumerate(range(0, count, 8)):
        write_part(folder, "text", part, vectors[start:start + 8],
                   pd.DataFrame({"caption": [f"prompt {r}" for r in range(start, min(start + 8, count))]}))
    return folder


def _locations(path: Path, names: list[str]) -> Path:
    """Locations of most images (every seventh left out), with a sequence for some."""
    rows = [f"{n},{4.9 + i * 1e-4},{52.37 + i * 1e-4},{'seq' + str(i % 3) if i % 2 else ''}"
            for i, n in enumerate(names) if i % 7]
    path.write_text("image,lon,lat,sequence\n" + "\n".join(rows) + "\n")
    return path


def _summary(summary: rating.RateSummary) -> dict:
    return {key: value for key, value in vars(summary).items() if key != "out"}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---- work units, without Ray ----


def test_units_cover_the_rows_and_end_where_chunks_end(tmp_path):
    folder, names = _city(tmp_path / "emb", 150, 37)
    inputs = rating.read_inputs(folder, None, None, 8, panoramic=False)
    units = rating_plan.plan(inputs)
    assert [u.number for u in units] == list(range(len(units))) and len(units) > 10
    assert units[0].start == 0 and units[-1].stop == len(names) == inputs.total
    assert all(a.stop == b.start for a, b in zip(units, units[1:]))
    # chunks start at each part's first row and every 8 rows after it
    ends = {p * 37 + r for p in range(len(names) // 37 + 1) for r in range(8, 37, 8)} | set(range(0, len(names), 37))
    assert all(u.stop in ends | {len(names)} for u in units)


def test_panoramic_units_never_split_a_panorama(tmp_path):
    names = ["a_x0.jpg", "a_x1.jpg", "b_x0.jpg", "c_x0.jpg", "b_x1.jpg", "d_x0.jpg", "d_x1.jpg", "e.jpg", "f_x0.jpg"]
    # after a (1 panorama), after c and b (3), after d (4), after e (5), after f (6); b is open from row 2 to 4
    assert rating_plan.panorama_ends(names, 1).tolist() == [2, 5, 7, 8, 9]
    assert rating_plan.panorama_ends(names, 2).tolist() == [7, 9]
    assert rating_plan.panorama_ends(names, 3).tolist() == [5, 9]
    _, city = _city(tmp_path / "far", 150, 37, far=True)
    assert rating_plan.panorama_ends(city, 4).tolist() == [len(city)]  # one panorama open from first row to last
    _, city = _city(tmp_path / "emb", 150, 37)
    ends = rating_plan.panorama_ends(city, 4)
    keys = [panorama_id(n) for n in city]
    assert len(ends) == -(-len(set(keys)) // 4)
    for cut in ends[:-1]:
        assert not set(keys[:cut]) & set(keys[cut:]) and len(set(keys[:cut])) % 4 == 0


@pytest.mark.parametrize("out, panoramic, located", [("rated.csv", False, False), ("rated.parquet", False, True),
                                                     ("rated.geojson", True, True), ("pano.csv", True, False)])
def test_units_rated_apart_and_joined_make_the_local_file(tmp_path, out, panoramic, located):
    model = load_model(_model(tmp_path / "model.npz"))
    folder, names = _city(tmp_path / "emb", 150, 37)
    locations = read_locations(_locations(tmp_path / "loc.csv", names)) if located else None
    local = rating.rate(model, folder, tmp_path / f"local-{out}", locations=locations, average_panoramic=panoramic,
                        chunk_size=8, quiet=True)

    inputs = rating.read_inputs(folder, None, None, 8, panoramic)
    units = rating_plan.plan(inputs)
    kind = "geoparquet" if located and out.endswith(".parquet") else Path(out).suffix[1:]
    metadata = rating.rating_metadata(model, None)
    first = rating.first_table(rating.RowRange(inputs, 0, units[0].stop), model.categories,
                               interval_level(model, None), locations)
    parts = RatedParts(tmp_path / out, kind, "test")
    parts.start()
    estimator = rating.make_estimator(model, average_panoramic=panoramic)
    summaries = [parts.write(u.number, metadata, rated_schema(kind, first, metadata),
                             lambda write, u=u: rating.rate_rows(rating.RowRange(inputs, u.start, u.stop), estimator,
                                                                 False, locations, write))
                 for u in reversed(units)]  # any order: each part is written on its own
    parts.join(units, metadata, first)
    assert (tmp_path / out).read_bytes() == (tmp_path / f"local-{out}").read_bytes()
    assert len(units) > 10 and sum(s.rows for s in summaries) == local.rows


def test_parquet_files_are_joined_by_copying_row_groups(tmp_path):
    rng = np.random.default_rng(0)
    tables = [pa.table({"image": [f"i{n}_{r}" for r in range(size)], "score": rng.uniform(1, 5, size),
                        "flag": rng.uniform(size=size) > 0.5,
                        "note": [None if r % 3 else "x" * r for r in range(size)]})
              for n, size in enumerate([40, 3, 17])]
    schema = tables[0].schema.with_metadata({b"percept": b'{"model_card": null}'})

    def written(path: Path, chunks: list[pa.Table]) -> Path:
        with pq.ParquetWriter(path, schema) as writer:
            for chunk in chunks:
                writer.write_table(chunk)
        return path

    whole = written(tmp_path / "whole.parquet", tables)
    parts = [written(tmp_path / "a.parquet", tables[:1]), written(tmp_path / "b.parquet", tables[1:])]
    joined = io.BytesIO()
    join_parquet(parts, joined)
    assert joined.getvalue() == whole.read_bytes()
    back = pq.read_table(io.BytesIO(joined.getvalue()))
    assert back.num_rows == 60 and back.equals(pa.concat_tables(tables).replace_schema_metadata(back.schema.metadata))
    other = tmp_path / "other.parquet"
    pq.write_table(tables[0].drop_columns(["note"]), other)
    with pytest.raises(NotJoinable, match="another schema"):
        join_parquet([parts[0], other], io.BytesIO())


# ---- on Ray ----


@pytest.mark.ray
def test_ray_rating_is_byte_identical_to_local(ray_cluster, tmp_path):
    model = load_model(_model(tmp_path / "model.npz"))
    folder, names = _city(tmp_path / "emb", 150, 37)
    far, _ = _city(tmp_path / "far", 150, 37, far=True)
    locations = read_locations(_locations(tmp_path / "loc.csv", names))
    environmental = load_model(_environmental_model(tmp_path / "env.npz"))
    texts = _texts(tmp_path / "text", len(names))
    cases = {"plain.csv": {}, "located.parquet": {"locations": locations}, "located.geojson": {"locations": locations},
             "panoramic.csv": {"average_panoramic": True}, "narrow.parquet": {"interval": 0.5, "include_self": True},
             "scattered.csv": {"average_panoramic": True, "embeddings": far},
             "environmental.csv": {"model": environmental, "text_dir": texts}}
    for out, options in cases.items():
        embeddings, used = options.pop("embeddings", folder), options.pop("model", model)
        local = rate(used, embeddings, tmp_path / f"local-{out}", CPU, chunk_size=8, quiet=True, **options)
        on_ray = rate(used, embeddings, tmp_path / f"ray-{out}", ON_RAY, chunk_size=8, quiet=True, **options)
        assert (tmp_path / f"ray-{out}").read_bytes() == (tmp_path / f"local-{out}").read_bytes(), out
        assert _summary(on_ray) == _summary(local), out
        if embeddings == folder:
            assert on_ray.zero.first.endswith(f"row 7 (/data/{names[7]})")
            assert on_ray.zero.count == (2 if "text_dir" in options else 1)
        if used is model:
            assert on_ray.in_survey > 0 and on_ray.level == (0.5 if "interval" in options else 0.9)
    inputs = rating.read_inputs(folder, None, None, 8, False)
    assert len(rating_plan.plan(inputs)) > 10  # the output was joined from many parts
    plain = pd.read_csv(tmp_path / "ray-plain.csv")
    assert plain["image"].tolist() == names and plain.loc[7, list(CATEGORIES)].isna().all()
    assert {f"{c}_{end}" for c in CATEGORIES for end in ("lo", "hi")} <= set(plain.columns)
    assert _leftovers(tmp_path) == []


@pytest.mark.ray
def test_worker_failures_are_the_local_one_line_errors(ray_cluster, tmp_path, capsys):
    model = _model(tmp_path / "model.npz")
    folder, names = _city(tmp_path / "emb", 60, 37)
    vectors = np.load(folder / "img_emb" / "img_emb_3.npy")
    vectors[5, 2] = np.nan
    np.save(folder / "img_emb" / "img_emb_3.npy", vectors)
    argv = ["rate", "--model", str(model), "-e", str(folder), "--chunk-size", "8", "--device", "cpu", "-q"]
    assert percept_main([*argv, "--out", str(tmp_path / "local.csv")]) == 2
    local = capsys.readouterr().err
    assert percept_main([*argv, "--out", str(tmp_path / "ray.csv"), "--engine", "ray", "--ray-address", ray_cluster,
                         "--workers", "2"]) == 2
    on_ray = capsys.readouterr().err
    assert local.startswith("error: ") and local.count("\n") == 1 and "img_emb_3.npy row 5" in local
    assert on_ray.splitlines()[-1] == local.strip() and "Traceback" not in on_ray, on_ray
    assert not (tmp_path / "ray.csv").exists() and _leftovers(tmp_path) == []
    with pytest.raises(PerceptError, match="the Ray cluster has 2 CPUs"):
        rate(load_model(model), folder, tmp_path / "x.csv", EngineOptions("ray", workers=3, device="cpu"), quiet=True)


def _rate_command(model: Path, folder: Path, out: Path) -> list[str]:
    """``percept rate`` on Ray with 2 CPU workers and small chunks, as a command."""
    return [sys.executable, "-m", "percept.cli.main", "rate", "--model", str(model), "-e", str(folder),
            "--out", str(out), "--engine", "ray", "--workers", "2", "--device", "cpu", "--chunk-size", "64", "-q"]


def _records(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.parts-*/part-*.json"))


def _wait_for_records(out: Path, driver: subprocess.Popen, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(_records(out)) < count:
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended first ({driver.returncode}): {driver.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("no parts were written in time")
        time.sleep(0.05)


def _big_city(tmp_path: Path) -> tuple[Path, Path]:
    """A model of 400 images and 30,000 rows in parts of 2,000: at 64 rows a chunk, a few hundred work units."""
    model = _model(tmp_path / "model.npz", samples=400, dim=32)
    folder, _ = _city(tmp_path / "emb", 11000, 2000, dim=32)
    return model, folder


@pytest.mark.ray
def test_killed_driver_resumes_from_its_parts(ray_cluster, tmp_path):
    model, folder = _big_city(tmp_path)
    out = tmp_path / "rated.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS=ray_cluster)
    driver = subprocess.Popen(_rate_command(model, folder, out), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_records(out, driver, 3)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    records = _records(out)
    assert not out.exists() and records
    # a finished part is taken as it is: mark it, and find the mark in the output
    part = records[0].with_suffix(".csv")
    text = part.read_text()
    first_name = text.split(",", 1)[0]
    part.write_text(text.replace(first_name, "/data/REUSED.jpg", 1))
    stale = tmp_path / ".rated.csv.parts-0123456789abcdef"
    stale.mkdir()

    local = rate(load_model(model), folder, tmp_path / "local.csv", CPU, chunk_size=64, quiet=True)
    resumed = rate(load_model(model), folder, out, ON_RAY, chunk_size=64, quiet=True)
    assert _summary(resumed) == _summary(local)
    assert "/data/REUSED.jpg" in out.read_text()
    assert out.read_text().replace("/data/REUSED.jpg", first_name, 1) == (tmp_path / "local.csv").read_text()
    assert _leftovers(tmp_path) == []


@pytest.mark.ray
def test_losing_a_node_mid_run_still_gives_the_local_file(two_nodes, tmp_path):  # noqa: F811
    model, folder = _big_city(tmp_path)
    out = tmp_path / "rated.parquet"
    driver = subprocess.Popen(_rate_command(model, folder, out), env={**two_nodes.env, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_records(out, driver, 2)
        units = len(rating_plan.plan(rating.read_inputs(folder, None, None, 64, False)))
        assert len(_records(out)) < units / 2  # the node is lost early in the run
        two_nodes.kill("second")
        _, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-3000:]
    rate(load_model(model), folder, tmp_path / "local.parquet", CPU, chunk_size=64, quiet=True)
    assert out.read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("panoramic", [False, True])
def test_a_device_estimator_rates_rows_as_stored_like_the_cpu(tmp_path, panoramic):
    """Rating with the device estimator (torch, here on the CPU device) takes the float16 rows as stored (single
    images) or the CPU's unit rows (panoramas), and gives the CPU's rows within 1e-9, zero vector included."""
    torch = pytest.importorskip("torch")
    from percept.model.torch_estimates import DeviceEstimator

    model = load_model(_model(tmp_path / "model.npz"))
    folder, _ = _city(tmp_path / "emb", 120, 50)
    local = rating.rate(model, folder, tmp_path / "cpu.csv", average_panoramic=panoramic, chunk_size=16, quiet=True)
    inputs = rating.read_inputs(folder, None, None, 16, panoramic)
    rows = rating.RowRange(inputs, 0, inputs.total)
    assert rows.stored_rows_suffice is not panoramic
    estimator = DeviceEstimator(model, image_key=panorama_id if panoramic else location_key,
                                device="cpu")
    tables: list[pd.DataFrame] = []
    summary = rating.rate_rows(rows, estimator, False, None, tables.append)
    assert torch.device("cpu") == estimator.device
    expected = pd.read_csv(tmp_path / "cpu.csv")
    got = pd.concat(tables, ignore_index=True)
    assert list(got.columns) == list(expected.columns) and len(got) == local.rows == summary.rows
    assert summary.zero.count == local.zero.count == 1 and summary.in_survey == local.in_survey
    numeric = [c for c in expected.columns if c != "image"]
    assert got["image"].tolist() == expected["image"].tolist()
    np.testing.assert_allclose(got[numeric].to_numpy(float), expected[numeric].to_numpy(float), rtol=0, atol=1e-9)
    assert got[numeric].isna().equals(expected[numeric].isna())


def test_a_part_finished_after_the_run_was_given_up_leaves_no_folder(tmp_path):
    """Only the driver makes the parts folder: a worker finishing a part after the run was given up (its folder
    removed) gets the one-line error and does not bring the folder back."""
    parts = RatedParts(tmp_path / "rated.csv", "csv", "test")
    parts.start()

    def rate_after_removal(write) -> rating.RateSummary:
        parts.remove()
        write(pd.DataFrame({"image": ["a.jpg"], "walkability": [3.0]}))
        return rating.RateSummary(1, 0, Path())

    with pytest.raises(PerceptError, match="was given up"):
        parts.write(0, {"model_card": None, "interval_level": None}, None, rate_after_removal)
    assert _leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []
