"""Environmental prompts, quintiles, prompt files, combining methods and ``percept prompts``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import geometric_slerp

import percept.cli.main as cli_main
from percept.data.survey import load_survey
from percept.environment.combining import combine, slerp_midpoint
from percept.environment.keys import ENV_KEYS
from percept.environment.prompt_files import (
    prompt_root,
    prompt_text_dir,
    read_prompts,
    write_prompts,
)
from percept.environment.prompts import (
    QUINTILE_WORDS,
    build_prompts,
    key_text,
    quintile_bins,
    quintile_reference,
)
from percept.errors import PerceptError

TESTS = Path(__file__).parent


@pytest.fixture
def env_reference_dir() -> Path:
    """The reference outputs of the original tool (copied into tests/reference)."""
    return TESTS / "reference"


def prompt_digest(root: Path) -> tuple[int, str]:
    """Count and sha256 of the prompt files under ``root``, as the reference runner computes them."""
    files = sorted(root.glob("text-prompt*-*/text/*.txt"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return len(files), digest.hexdigest()


def feature(url: str = "https://x.org/img/a.jpg", **env) -> dict:
    return {"image_id": 1, "url": url, **env}


# --- reference parity -----------------------------------------------------------------

def test_style1_prompt_files_match_reference(env_reference_dir, tmp_path, monkeypatch):
    expected = json.loads((env_reference_dir / "expected" / "env_slerp1.json").read_text())["prompts"]
    survey = load_survey(env_reference_dir / "survey" / "data.geojson")
    prompt_set = build_prompts(survey.features, 1)
    monkeypatch.chdir(tmp_path)
    folder = write_prompts(prompt_text_dir("embeddings", 1),
                           {name: prompt_set.prompts[i] for name, i in survey.by_name.items()})
    assert folder == Path("text-prompt1-embeddings/text")
    assert prompt_digest(tmp_path) == (expected["count"], expected["sha256"])
    first = sorted(folder.glob("*.txt"))[0].read_text()
    assert first[:400] == expected["first"]
    assert prompt_set.incomplete == 0 and prompt_set.warning() is None
    assert prompt_set.keys == ENV_KEYS


# --- key text and style 0 -------------------------------------------------------------

@pytest.mark.parametrize("key, text", [
    ("streets_per_node_proportions1_100", "number of cul-de-sacs (within buffer of size 100m)"),
    ("streets_per_node_proportions3_300", "number of 3-way intersections (within buffer of size 300m)"),
    ("streets_per_node_proportions4_100", "number of 4-way intersections (within buffer of size 100m)"),
    ("num_nodes_300", "number of intersections (within buffer of size 300m)"),
    ("num_edges_100", "number of street segments (within buffer of size 100m)"),
    ("streets_per_node_avg_100", "streets per node avg (within buffer of size 100m)"),
    ("public_transport_density_or_proportion_300",
     "public transport density or proportion (within buffer of size 300m)"),
])
def test_key_text(key, text):
    assert key_text(key) == text


def test_style0_formats_values_as_python_str_in_property_order():
    props = feature(street_length_avg_300=29.089045454545474, greenspace_count_100=9,
                    average_safety=3.0, median_speed_300=30.0)
    prompt = build_prompts([props], 0).prompts[0]
    assert prompt == ("street length avg (within buffer of size 300m) is 29.089045454545474; "
                      "greenspace count (within buffer of size 100m) is 9; "
                      "median speed (within buffer of size 300m) is 30.0")


def test_style0_reads_json_numbers_as_written():
    props = json.loads('{"url": "a.jpg", "median_speed_100": 30.0, "num_nodes_100": 9, '
                       '"street_length_avg_100": 1e-05}')
    assert build_prompts([props], 0).prompts[0] == (
        "median speed (within buffer of size 100m) is 30.0; "
        "number of intersections (within buffer of size 100m) is 9; "
        "street length avg (within buffer of size 100m) is 1e-05")


def test_unknown_style_is_an_error():
    with pytest.raises(PerceptError, match="prompt style"):
        build_prompts([feature(num_nodes_100=1)], 2)


# --- quintiles ------------------------------------------------------------------------

def pandas_bins(values: np.ndarray) -> np.ndarray:
    """The original's binning: pandas.cut over numpy.quantile of the distinct values."""
    distinct = np.unique(values)
    edges = [-1, *np.quantile(distinct, [0.2, 0.4, 0.6, 0.8]), distinct.max() + 1]
    return pd.cut(values, edges, labels=False, include_lowest=True, right=True)


@pytest.mark.parametrize("seed", range(8))
def test_quintiles_match_pandas_cut(seed):
    rng = np.random.default_rng(seed)
    samples = (rng.poisson(6, 300), rng.gamma(2, 5, 300), rng.integers(0, 5, 300), rng.normal(0, 0.3, 300))
    values = np.asarray(samples[seed % len(samples)], dtype=np.float64)
    values = values[values >= -1]
    assert np.unique(values).size >= 5
    np.testing.assert_array_equal(quintile_bins(values), pandas_bins(values))


def test_quintiles_include_edges_and_minus_one():
    values = np.array([-1.0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(quintile_bins(values), pandas_bins(values))
    assert quintile_bins(values)[0] == 0


def test_style1_words_per_key():
    features = [feature(f"https://x.org/{i}.jpg", shops_count_100=i) for i in range(10)]
    words = [p.removeprefix("shops count (within buffer of size 100m) is ")
             for p in build_prompts(features, 1).prompts]
    assert words == ["very low", "very low", "low", "low", "medium", "medium", "high", "high",
                     "very high", "very high"]


def test_fewer_than_five_distinct_values_get_one_bin_each():
    np.testing.assert_array_equal(quintile_bins(np.array([7.0, 3, 3, 7, 5])), [2, 0, 0, 2, 1])
    np.testing.assert_array_equal(quintile_bins(np.array([4.0, 4, 4])), [0, 0, 0])
    features = [feature(f"{i}.jpg", median_speed_100=v) for i, v in enumerate([50.0, 30.0, 30.0, 15.0])]
    assert [p.split(" is ")[1] for p in build_prompts(features, 1).prompts] == \
        ["medium", "low", "low", "very low"]


def test_negative_values_are_valid():
    values = np.array([-50.0, -3, -1.5, -1, 0, 2, 10, 11])
    bins = quintile_bins(values)
    assert bins.min() == 0 and bins.max() == len(QUINTILE_WORDS) - 1
    distinct = np.unique(values)
    edges = np.quantile(distinct, [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_array_equal(bins, [int(np.sum(v > edges)) for v in values])
    np.testing.assert_array_equal(quintile_bins(np.array([-5.0, -2, -9])), [1, 2, 0])


# --- ranking new places against a survey's quintiles ---------------------------------

def words(prompt_set) -> list[str]:
    return [p.split(" is ")[1] if p else None for p in prompt_set.prompts]


@pytest.mark.parametrize("seed", range(4))
def test_new_places_are_binned_by_the_survey_edges_as_pandas_cut_would(seed):
    rng = np.random.default_rng(seed)
    survey_values = rng.gamma(2, 5, 200).round(1)
    places = np.concatenate([rng.uniform(-1, survey_values.max() + 1, 50), np.quantile(np.unique(survey_values),
                                                                                    [0.2, 0.4, 0.6, 0.8])])
    reference = quintile_reference([feature(shops_count_100=float(v)) for v in survey_values])
    ranked = build_prompts([feature(shops_count_100=float(v)) for v in places], 1, json.loads(json.dumps(reference)))
    distinct = np.unique(survey_values)
    edges = [-1, *np.quantile(distinct, [0.2, 0.4, 0.6, 0.8]), distinct.max() + 1]
    expected = pd.cut(places, edges, labels=False, include_lowest=True, right=True)
    assert words(ranked) == [QUINTILE_WORDS[b] for b in expected]


def test_survey_prompts_are_their_own_reference_and_a_place_keeps_its_prompt_in_any_file():
    rng = np.random.default_rng(3)
    survey = [feature(f"{i}.jpg", shops_count_100=int(rng.poisson(6)), median_speed_100=float(rng.choice([30, 50])),
                      num_nodes_300=float(rng.normal(40, 9))) for i in range(60)]
    reference = json.loads(json.dumps(quintile_reference(survey)))  # as stored in a model file
    assert build_prompts(survey, 1, reference).prompts == build_prompts(survey, 1).prompts
    place = feature("new.jpg", shops_count_100=7, median_speed_100=40.0, num_nodes_300=45.5)
    alone = build_prompts([place], 1, reference).prompts[0]
    for others in (survey[:2], [feature("x.jpg", shops_count_100=70, median_speed_100=10.0, num_nodes_300=0.0)]):
        assert build_prompts([*others, place], 1, reference).prompts[-1] == alone
    assert build_prompts([place], 1).prompts[0] != alone  # ranked among itself alone, every word is the lowest


def test_with_fewer_than_five_distinct_survey_values_new_values_rank_by_the_next_one_up():
    reference = quintile_reference([feature(median_speed_100=v) for v in (15.0, 30.0, 30.0, 50.0)])
    assert reference["median_speed_100"] == {"distinct": [15.0, 30.0, 50.0]}
    places = [feature(median_speed_100=v) for v in (10.0, 15.0, 20.0, 30.0, 50.0, 80.0)]
    assert words(build_prompts(places, 1, reference)) == ["very low", "very low", "low", "low", "medium", "high"]


def test_keys_the_survey_never_had_are_left_out_and_named():
    reference = quintile_reference([feature(shops_count_100=v) for v in range(10)])
    ranked = build_prompts([feature(shops_count_100=4, num_nodes_100=3)], 1, reference)
    assert ranked.prompts == ["shops count (within buffer of size 100m) is medium"]
    assert ranked.unranked == ("num_nodes_100",)


@pytest.mark.parametrize("entry", [{"edges": [1.0, 2.0, 3.0]}, {"edges": [1.0, 2.0, 3.0, "4"]},
                                   {"edges": [4.0, 3.0, 2.0, 1.0]}, {"distinct": []}, {"quantiles": [1.0]},
                                   {"edges": [1.0, 2.0, 3.0, 4.0], "distinct": [1.0]}, [1.0, 2.0, 3.0, 4.0]])
def test_a_damaged_reference_is_an_error(entry):
    with pytest.raises(PerceptError, match="quintile reference for 'shops_count_100' is damaged.*re-export"):
        build_prompts([feature(shops_count_100=1)], 1, {"shops_count_100": entry})
    with pytest.raises(PerceptError, match="'no_such_key' is damaged"):
        build_prompts([feature(shops_count_100=1)], 1, {"no_such_key": {"distinct": [1.0]}})


# --- missing, null and invalid values -------------------------------------------------

def test_missing_and_null_keys_are_omitted_and_counted():
    features = [feature("a.jpg", num_nodes_100=1, num_edges_100=2),
                feature("b.jpg", num_nodes_100=3),
                feature("c.jpg", num_edges_100=None, num_nodes_100=float("nan")),
                feature("d.jpg", num_nodes_100=5, num_edges_100=6)]
    prompt_set = build_prompts(features, 0)
    assert prompt_set.prompts == [
        "number of intersections (within buffer of size 100m) is 1; "
        "number of street segments (within buffer of size 100m) is 2",
        "number of intersections (within buffer of size 100m) is 3",
        "",
        "number of intersections (within buffer of size 100m) is 5; "
        "number of street segments (within buffer of size 100m) is 6"]
    assert prompt_set.incomplete == 2
    assert prompt_set.keys == ("num_nodes_100", "num_edges_100")
    assert "2 of 4 survey features" in prompt_set.warning()


def test_missing_values_take_no_part_in_quintiles():
    full = [feature(f"{i}.jpg", shops_count_100=i) for i in range(10)]
    with_gaps = full + [feature("x.jpg"), feature("y.jpg", shops_count_100=None)]
    assert build_prompts(with_gaps, 1).prompts[:10] == build_prompts(full, 1).prompts


@pytest.mark.parametrize("value", ["many", True, [1, 2], {"a": 1}])
def test_non_numeric_value_is_an_error(value):
    features = [feature("a.jpg", shops_count_100=1), feature("https://x.org/b.jpg", shops_count_100=value)]
    with pytest.raises(PerceptError, match=r"feature 1 \(b\.jpg\).*'shops_count_100'.*not a number"):
        build_prompts(features, 1)


@pytest.mark.parametrize("features", [[], [feature("a.jpg", average_safety=2.0)]])
def test_survey_without_environmental_keys_is_an_error(features):
    with pytest.raises(PerceptError, match="environmental keys"):
        build_prompts(features, 0)


# --- combining ------------------------------------------------------------------------

def unit_rows(rng, rows: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_append_concatenates_normalised_rows():
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)).astype(np.float16)
    combined = combine(images, texts, "append")
    assert combined.shape == (6, 8) and combined.dtype == np.float64
    np.testing.assert_allclose(combined[:, :4], images / np.linalg.norm(images, axis=1, keepdims=True))
    np.testing.assert_allclose(np.linalg.norm(combined[:, 4:], axis=1), 1.0)


def test_average_is_elementwise_mean_of_unit_rows():
    rng = np.random.default_rng(2)
    images, texts = unit_rows(rng, 5, 7), unit_rows(rng, 5, 7)
    np.testing.assert_allclose(combine(3 * images, texts, "average"), (images + texts) / 2)


def test_slerp_matches_scipy_geometric_slerp():
    rng = np.random.default_rng(3)
    images, texts = unit_rows(rng, 50, 16), unit_rows(rng, 50, 16)
    combined = combine(images, 2 * texts, "slerp")
    for row in range(50):
        np.testing.assert_allclose(combined[row], geometric_slerp(images[row], texts[row], 0.5), atol=1e-12)


def test_slerp_neighbours_equal_average_neighbours():
    rng = np.random.default_rng(4)
    images, texts = unit_rows(rng, 40, 8), unit_rows(rng, 40, 8)
    slerp, average = combine(images, texts, "slerp"), combine(images, texts, "average")
    unit_average = average / np.linalg.norm(average, axis=1, keepdims=True)
    np.testing.assert_array_equal(np.argsort(-(slerp @ slerp[:5].T), axis=0, kind="stable"),
                                  np.argsort(-(unit_average @ unit_average[:5].T), axis=0, kind="stable"))


def test_slerp_identical_and_antipodal_rows():
    a = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
    middle = slerp_midpoint(a, np.array([[0.6, 0.8, 0.0], [0.0, -0.6, -0.8]]))
    np.testing.assert_allclose(middle[0], a[0])
    np.testing.assert_allclose(np.linalg.norm(middle, axis=1), 1.0)
    assert abs(middle[1] @ a[1]) < 1e-12


def test_combine_errors():
    vectors = np.ones((3, 4))
    with pytest.raises(PerceptError, match="append, average, slerp"):
        combine(vectors, vectors, "concat")
    with pytest.raises(PerceptError, match="3 image vectors but 2 text vectors"):
        combine(vectors, vectors[:2], "average")
    with pytest.raises(PerceptError, match="dimensions"):
        combine(vectors, np.ones((3, 5)), "slerp")
    assert combine(vectors, np.ones((3, 5)), "append").shape == (3, 9)


# --- prompt files ---------------------------------------------------------------------

def test_prompt_folder_names():
    assert prompt_root("embeddings", 1) == Path("text-prompt1-embeddings")
    assert prompt_root("/data/city/emb", 0) == Path("/data/city/text-prompt0-emb")  # beside, never nested
    assert prompt_text_dir("embeddings-open_clip:ViT-B-32", 0) == \
        Path("text-prompt0-embeddings-open_clip:ViT-B-32/text")


def test_prompt_files_round_trip(tmp_path):
    prompts = {"/data/img/a.jpg": "shops count is low", "https://x.org/img/b.c.png": "é and ü"}
    folder = write_prompts(tmp_path / "p", prompts)
    assert folder == tmp_path / "p"
    assert (folder / "a.txt").read_bytes() == b"shops count is low\n"
    assert (folder / "b.c.txt").read_bytes() == "é and ü\n".encode()
    assert read_prompts(folder, ["b.c.png", "x/a.jpg"]) == ["é and ü", "shops count is low"]


def test_identical_prompt_files_are_not_rewritten(tmp_path):
    write_prompts(tmp_path, {"a.jpg": "one", "b.jpg": "old"})
    os.utime(tmp_path / "a.txt", ns=(1, 1))
    write_prompts(tmp_path, {"a.jpg": "one", "b.jpg": "two"})
    assert (tmp_path / "a.txt").stat().st_mtime_ns == 1
    assert (tmp_path / "b.txt").read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_read_prompts_from_layout_folder_and_missing_file(tmp_path):
    write_prompts(tmp_path / "text-prompt1-emb" / "text", {"a.jpg": "one"})
    assert read_prompts(tmp_path / "text-prompt1-emb", ["a.jpg"]) == ["one"]
    with pytest.raises(PerceptError, match=r"no prompt file .*b\.txt for image b\.jpg"):
        read_prompts(tmp_path / "text-prompt1-emb", ["a.jpg", "/img/b.jpg"])
    with pytest.raises(PerceptError, match="does not exist"):
        read_prompts(tmp_path / "nowhere", ["a.jpg"])


def test_images_sharing_a_stem_need_the_same_prompt(tmp_path):
    write_prompts(tmp_path, {"a.jpg": "same", "a.png": "same"})
    with pytest.raises(PerceptError, match="share the prompt file a.txt"):
        write_prompts(tmp_path, {"a.jpg": "one", "a.png": "two"})


# --- percept prompts ------------------------------------------------------------------

@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``percept ARGS`` with only the prompts subcommand registered; return (code, out, err)."""
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ("prompts",))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def survey_file(tmp_path) -> Path:
    features = [{"type": "Feature", "geometry": None,
                 "properties": feature(f"https://x.org/img/{i}.jpg", num_nodes_100=i, median_speed_300=30.0)}
                for i in range(6)]
    features[5]["properties"].pop("median_speed_300")
    path = tmp_path / "data.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_prompts_command_shows_prompts(run_cli, survey_file):
    code, out, err = run_cli("prompts", "-g", str(survey_file), "--limit", "2")
    assert code == 0
    assert out.splitlines() == [
        "0.jpg\tnumber of intersections (within buffer of size 100m) is 0; "
        "median speed (within buffer of size 300m) is 30.0",
        "1.jpg\tnumber of intersections (within buffer of size 100m) is 1; "
        "median speed (within buffer of size 300m) is 30.0"]
    assert "warning: 1 of 6 survey features" in err


def test_prompts_command_selects_images_and_style(run_cli, survey_file):
    code, out, _ = run_cli("prompts", "-g", str(survey_file), "--prompt-style", "1", "--image", "5", "0.jpg")
    assert code == 0
    assert out.splitlines() == [
        "5.jpg\tnumber of intersections (within buffer of size 100m) is very high",
        "0.jpg\tnumber of intersections (within buffer of size 100m) is very low; "
        "median speed (within buffer of size 300m) is very low"]


def test_prompts_command_writes_files(run_cli, survey_file, tmp_path):
    out_dir = tmp_path / "prompts"
    code, out, _ = run_cli("prompts", "-g", str(survey_file), "--out", str(out_dir))
    assert code == 0 and "6 prompt files" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{i}.txt" for i in range(6)]
    assert read_prompts(out_dir, ["5.jpg"]) == ["number of intersections (within buffer of size 100m) is 5"]


def test_prompts_command_errors(run_cli, survey_file, tmp_path):
    code, _, err = run_cli("prompts", "-g", str(survey_file), "--image", "nope.jpg")
    assert code == 2 and "no survey image named nope.jpg" in err
    code, _, err = run_cli("prompts", "-g", str(tmp_path / "missing.geojson"))
    assert code == 2 and "does not exist" in err
    with pytest.raises(SystemExit) as exit_info:
        run_cli("prompts", "-g", str(survey_file), "--prompt-style", "2")
    assert exit_info.value.code == 2
