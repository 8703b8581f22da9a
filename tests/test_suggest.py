"""``percept suggest``: the greedy coverage against a plain reference implementation, the rules (no outliers,
no survey images, no near-duplicates, per-cell caps, seeds), the CSV it writes and ``percept map
--suggestions`` drawing it."""

from __future__ import annotations

import json
import re

import h3
import numpy as np
import pandas as pd
import pytest

from percept.city.suggest import Candidates, SuggestOptions, cell_numbers, pick
from percept.city.suggest_io import CSV_COLUMNS, read_suggestions
from percept.cli.dropin import main as dropin_main
from percept.cli.main import main as percept_main
from percept.data.locations import panorama_id
from percept.errors import PerceptError
from percept.model.io import load_model, save_model
from percept.model.knn import l2_normalise
from percept.synthetic.spatial import generate_spatial_survey

# ---------------------------------------------------------------- the greedy against a reference


def reference_picks(vectors, distance, weight, eligible, group, count, neighbours, duplicate, seed, cell=None,
                    per_cell=None):
    """The greedy written plainly: a dense similarity matrix, every gain recomputed at every step."""
    n = len(vectors)
    similarity = vectors @ vectors.T
    chord = np.sqrt(np.maximum(2 - 2 * similarity, 0))
    lists = [[j for j in np.argsort(-similarity[i], kind="stable")[:neighbours + 1] if j != i] for i in range(n)]
    listed_by = [[j for j in range(n) if p in lists[j]] for p in range(n)]
    rank = np.random.default_rng(seed).permutation(n)
    cur = distance.astype(float).copy()
    picked, groups, cells = [], set(), {}
    while len(picked) < count:
        best = None
        for p in range(n):
            if not eligible[p] or p in picked or group[p] in groups:
                continue
            if picked and max(similarity[p, q] for q in picked) >= duplicate:
                continue
            if per_cell is not None and (cell[p] < 0 or cells.get(cell[p], 0) >= per_cell):
                continue
            value = sum(weight[j] * max(cur[j] - chord[j, p], 0.0) for j in listed_by[p])
            if best is None or (value, -rank[p]) > (best[0], -rank[best[1]]):
                best = (value, p)
        if best is None or best[0] <= 0:
            break
        p = best[1]
        for j in listed_by[p]:
            cur[j] = min(cur[j], chord[j, p])
        cur[p] = 0.0
        picked.append(p)
        groups.add(group[p])
        if per_cell is not None:
            cells[cell[p]] = cells.get(cell[p], 0) + 1
    return picked


def unit(rng, n, dim, centre=None, spread=1.0):
    base = np.zeros(dim) if centre is None else centre
    return l2_normalise(base + spread * rng.normal(size=(n, dim)))


def random_candidates(seed, n=120, dim=8, with_width=True, cells=False):
    rng = np.random.default_rng(seed)
    vectors = unit(rng, n, dim)
    survey = unit(rng, 30, dim, centre=2 * np.eye(dim)[0], spread=0.6)
    distance = np.sqrt(np.maximum(2 - 2 * np.max(vectors @ survey.T, axis=1), 0))
    width = rng.uniform(0.5, 3.0, n) if with_width else None
    eligible = rng.random(n) > 0.1
    group = np.arange(n) // 3  # three crops per panorama
    cell = rng.integers(-1, 12, n) if cells else None
    return Candidates(vectors, distance, width, eligible, group, cell)


@pytest.mark.parametrize("strategy", ["coverage", "mixed", "uncertainty"])
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_the_reference(strategy, seed):
    from percept.city.suggest import demand_weights

    candidates = random_candidates(seed)
    options = SuggestOptions(25, strategy, seed=seed, duplicate_similarity=0.9, neighbours=10)
    got = pick(candidates, options)
    weight = demand_weights(strategy, candidates.distance, candidates.width)
    want = reference_picks(candidates.vectors, candidates.distance, weight, candidates.eligible, candidates.group,
                           25, 10, 0.9, seed)
    assert got.index.tolist() == want
    assert len(want) == 25


def test_greedy_equals_the_reference_with_a_cell_cap():
    candidates = random_candidates(3, cells=True)
    options = SuggestOptions(30, "coverage", seed=3, per_cell=2, neighbours=12)
    got = pick(candidates, options)
    want = reference_picks(candidates.vectors, candidates.distance, np.ones(len(candidates)), candidates.eligible,
                           candidates.group, 30, 12, 0.95, 3, candidates.cell, 2)
    assert got.index.tolist() == want
    cells = candidates.cell[got.index]
    assert (cells >= 0).all() and np.bincount(cells).max() <= 2


def plain(vectors, distance, width=None, eligible=None, group=None):
    n = len(vectors)
    return Candidates(vectors, distance, width, np.ones(n, bool) if eligible is None else eligible,
                      np.arange(n) if group is None else group)


def test_a_dense_far_cluster_comes_before_a_sparse_one_and_outliers_never():
    rng = np.random.default_rng(5)
    dim = 16
    axes = np.eye(dim)
    dense = unit(rng, 40, dim, centre=4 * axes[1], spread=0.5)
    sparse = unit(rng, 8, dim, centre=4 * axes[2], spread=0.5)
    outliers = l2_normalise(axes[3:7] + 0.01 * rng.normal(size=(4, dim)))  # alone, and furthest from the survey
    vectors = np.vstack([dense, sparse, outliers])
    survey_direction = axes[0]
    distance = np.sqrt(2 - 2 * vectors @ survey_direction)
    picks = pick(plain(vectors, distance), SuggestOptions(60, "coverage", neighbours=6, duplicate_similarity=0.99))
    assert picks.index[0] < 40  # the dense cluster first
    assert not np.isin(np.arange(48, 52), picks.index).any()  # no outlier, however far
    assert len(picks.index) < 60 and "nearer" in picks.short
    assert (picks.represents > 0).all()


def test_survey_images_near_duplicates_and_panoramas_are_never_picked():
    rng = np.random.default_rng(2)
    vectors = unit(rng, 60, 6)
    vectors[1] = l2_normalise(vectors[:1] + 1e-4 * rng.normal(size=(1, 6)))[0]  # a near-duplicate of 0
    vectors[2] = vectors[0]  # an exact one
    distance = np.full(60, 1.0)
    eligible = np.ones(60, bool)
    eligible[10:20] = False  # survey images
    group = np.arange(60)
    group[31] = group[30]  # two crops of one panorama
    picks = pick(plain(vectors, distance, eligible=eligible, group=group), SuggestOptions(60, "coverage",
                                                                                           neighbours=8))
    chosen = set(picks.index.tolist())
    assert not chosen & set(range(10, 20))
    assert len(chosen & {0, 1, 2}) <= 1 and len(chosen & {30, 31}) <= 1
    similarity = vectors[picks.index] @ vectors[picks.index].T
    assert (similarity[~np.eye(len(picks.index), dtype=bool)] < 0.95).all()


def test_ties_follow_the_seed_and_the_same_seed_gives_the_same_picks():
    rng = np.random.default_rng(0)
    cluster = unit(rng, 12, 6, centre=3 * np.eye(6)[1], spread=0.4)
    mirror = cluster.copy()
    mirror[:, [1, 2]] = mirror[:, [2, 1]]  # the same cluster, mirrored: every gain ties with its twin
    vectors = np.vstack([cluster, mirror])
    distance = np.full(24, 1.2)
    firsts = {seed: pick(plain(vectors, distance), SuggestOptions(1, "coverage", seed=seed, neighbours=5)).index[0]
              for seed in range(12)}
    assert {f < 12 for f in firsts.values()} == {True, False}  # each cluster won under some seed
    assert all(pick(plain(vectors, distance), SuggestOptions(1, "coverage", seed=s, neighbours=5)).index[0] == f
               for s, f in firsts.items())


def test_mixed_weighs_the_interval_width_and_uncertainty_needs_one():
    rng = np.random.default_rng(4)
    cluster = unit(rng, 15, 6, centre=3 * np.eye(6)[1], spread=0.4)
    mirror = cluster.copy()
    mirror[:, [1, 2]] = mirror[:, [2, 1]]
    vectors = np.vstack([cluster, mirror])
    distance = np.full(30, 1.2)
    width = np.r_[np.full(15, 1.0), np.full(15, 3.0)]  # the model is unsure about the mirror
    for seed in range(5):
        picks = pick(plain(vectors, distance, width), SuggestOptions(1, "mixed", seed=seed, neighbours=5))
        assert picks.index[0] >= 15
    same = pick(plain(vectors, distance, None), SuggestOptions(3, "mixed", neighbours=5))
    assert same.index.tolist() == pick(plain(vectors, distance, None),
                                       SuggestOptions(3, "coverage", neighbours=5)).index.tolist()
    with pytest.raises(PerceptError, match="--strategy uncertainty needs a model with prediction intervals"):
        pick(plain(vectors, distance, None), SuggestOptions(3, "uncertainty"))


@pytest.mark.parametrize("field, value, message", [
    ("count", 0, "-n takes the number of images"), ("strategy", "random", "--strategy takes"),
    ("per_cell", 0, "--max-per-cell takes 1 or more"), ("duplicate_similarity", 1.5, "--duplicate-similarity"),
    ("neighbours", 0, "--neighbours takes 1 or more"), ("seed", -1, "--random-seed takes a whole number")])
def test_bad_options_are_refused(field, value, message):
    with pytest.raises(PerceptError, match=re.escape(message)):
        SuggestOptions(**{"count": 5, field: value})


def test_survey_images_their_panoramas_and_copies_of_them_are_not_candidates():
    from percept.city.suggest_io import assess
    from percept.model.estimates import Estimates

    names = ["s_x0.jpg", "s_x1.jpg", "copy.jpg", "far.jpg", "other_x2.jpg", "wide.jpg"]
    estimates = Estimates.empty(6, 5, np.array([True, False, False, False, False, False]), 0.9)
    estimates.best_similarity[:] = [1.0, 0.97, 0.999, 0.2, 0.5, 0.4]
    estimates.lo[:] = 2.0
    estimates.hi[:] = [[3.0] * 5] * 5 + [[3.0, 4.0, 5.0, np.nan, 2.0]]
    vectors = np.eye(6)
    candidates = assess(names, estimates, vectors, {"s"}, None, 0.99)
    assert candidates.eligible.tolist() == [False, False, False, True, True, True]
    assert np.allclose(candidates.distance, np.sqrt(2 - 2 * estimates.best_similarity))
    assert np.allclose(candidates.width, [1, 1, 1, 1, 1, 1.5])
    assert candidates.group[0] == candidates.group[1] != candidates.group[4]


def test_cells_are_h3_cells():
    lon, lat = np.array([4.9, 4.9001, 5.2, np.nan]), np.array([52.37, 52.37, 52.1, 52.3])
    cells = cell_numbers(lon, lat, 8)
    assert cells[0] == cells[1] != cells[2] and cells[3] == -1
    assert h3.latlng_to_cell(52.37, 4.9, 8) == h3.latlng_to_cell(52.37, 4.9001, 8)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A spatial synthetic city whose western part was surveyed: its embeddings, locations and calibrated model."""
    root = tmp_path_factory.mktemp("suggest") / "city"
    generate_spatial_survey(root, n_panoramas=400, dim=16, ratings_per_image=5.0, seed=3)
    data = json.loads((root / "data.geojson").read_text())
    west = [f for f in data["features"] if f["geometry"]["coordinates"][0] < 4.9]
    (root / "survey.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": west}))
    rows = [(f["properties"]["url"].rsplit("/", 1)[-1], *f["geometry"]["coordinates"], 45.0 + i % 4 * 90)
            for i, f in enumerate(data["features"])]
    pd.DataFrame(rows, columns=["image", "lon", "lat", "angle"]).to_csv(root / "locations.csv", index=False)
    assert dropin_main(["-g", str(root / "survey.geojson"), "-e", str(root / "embeddings"), "-M", "synthetic",
                        "-k", "8", "--export", str(root / "model.npz"), "-q"]) == 0
    return root


def suggest(city, *args):
    return percept_main(["suggest", "--model", str(city / "model.npz"), "-e", str(city / "embeddings"), *args])


def test_the_csv_ranks_new_images_with_their_reasons(city, tmp_path, capsys):
    out = tmp_path / "suggestions.csv"
    assert suggest(city, "--locations", str(city / "locations.csv"), "-n", "25", "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "suggested 25 images of" in err and "by mixed into" in err
    table = pd.read_csv(out)
    assert tuple(table.columns) == CSV_COLUMNS
    assert table["rank"].tolist() == list(range(1, 26))
    model = load_model(city / "model.npz")
    survey = {name for names in model.images.values() for name in names}
    assert not set(table["image"]) & survey
    panoramas = [panorama_id(n) for n in table["image"]]
    assert len(set(panoramas)) == 25 and not set(panoramas) & {panorama_id(n) for n in survey}
    locations = pd.read_csv(city / "locations.csv").set_index("image")
    assert np.allclose(table[["lon", "lat", "angle"]], locations.loc[table["image"], ["lon", "lat", "angle"]])
    # the reasons agree with a brute-force look at the survey and with what 'percept rate' writes
    names = pd.read_parquet(city / "embeddings" / "metadata" / "metadata_0.parquet")["image_path"].str.rsplit(
        "/", n=1).str[-1].tolist()
    vectors = l2_normalise(np.load(city / "embeddings" / "img_emb" / "img_emb_0.npy").astype(np.float64))
    samples = l2_normalise(np.vstack(list(model.vectors.values())))
    best = np.max(vectors[[names.index(n) for n in table["image"]]] @ samples.T, axis=1)
    assert np.allclose(table["best_similarity"], best, atol=1e-6)
    assert (table["out_of_domain"] == (best < model.domain_threshold)).all()
    assert table["dissimilarity"].iloc[0] > 1  # far from the survey
    rated = tmp_path / "rated.csv"
    assert percept_main(["rate", "--model", str(city / "model.npz"), "-e", str(city / "embeddings"), "--out",
                         str(rated), "--include-self", "-q"]) == 0
    rated = pd.read_csv(rated).set_index("image").loc[table["image"]]
    categories = list(model.vectors)
    width = np.mean([rated[f"{c}_hi"] - rated[f"{c}_lo"] for c in categories], axis=0)
    assert np.allclose(table["width"], width, atol=1e-3)
    assert table["represents"].min() >= 1
    assert table["reason"].iloc[0].startswith(("outside the survey's domain (dissimilarity",
                                               "inside the survey's domain (dissimilarity"))
    lon = table["lon"].to_numpy()
    assert np.mean(lon >= 4.9) > 0.8  # most picks lie in the part the survey missed


def test_the_same_seed_gives_the_same_file_and_the_pool_follows_the_seed(city, tmp_path, capsys):
    files = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        files[name] = tmp_path / f"{name}.csv"
        assert suggest(city, "-n", "10", "-o", str(files[name]), "--pool", "300", "--random-seed", seed) == 0
    assert files["a"].read_bytes() == files["b"].read_bytes()
    assert set(pd.read_csv(files["a"])["image"]) != set(pd.read_csv(files["c"])["image"])
    assert "a random sample of 300 of the" in capsys.readouterr().err


def test_the_summary_says_what_is_missing(city, tmp_path, capsys):
    assert suggest(city, "-n", "5", "-o", str(tmp_path / "s.csv"), "--quiet") == 0
    assert "note: 5 suggested images have no location (give --locations FILE)" in capsys.readouterr().err
    assert suggest(city, "-n", "500", "-o", str(tmp_path / "all.csv"), "--neighbours", "3", "-q") == 0
    err = capsys.readouterr().err
    picked = len(pd.read_csv(tmp_path / "all.csv"))
    assert picked < 500 and f"note: picked {picked} of the 500 images asked for: no candidate left" in err


def test_per_cell_caps_the_picks_in_each_h3_cell(city, tmp_path):
    out = tmp_path / "cells.csv"
    assert suggest(city, "--locations", str(city / "locations.csv"), "-n", "30", "-o", str(out), "--per-cell",
                   "h3:8", "--max-per-cell", "2", "-q") == 0
    table = pd.read_csv(out)
    cells = [h3.latlng_to_cell(lat, lon, 8) for lon, lat in zip(table["lon"], table["lat"])]
    assert max(pd.Series(cells).value_counts()) <= 2 and len(table) == 30


def test_without_intervals_mixed_is_coverage_and_uncertainty_is_refused(city, tmp_path, capsys):
    model = load_model(city / "model.npz")
    bare = tmp_path / "bare.npz"
    save_model(bare, model.vectors, model.scores, None, model.images)
    outs = []
    for strategy in ("mixed", "coverage"):
        outs.append(tmp_path / f"{strategy}.csv")
        assert percept_main(["suggest", "--model", str(bare), "-e", str(city / "embeddings"), "-n", "8", "-o",
                             str(outs[-1]), "--strategy", strategy]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert pd.read_csv(outs[0])["width"].isna().all()
    assert "by coverage (the model holds no prediction intervals" in capsys.readouterr().err
    assert percept_main(["suggest", "--model", str(bare), "-e", str(city / "embeddings"), "-n", "8", "-o",
                         str(tmp_path / "u.csv"), "--strategy", "uncertainty"]) == 2
    assert "error: --strategy uncertainty needs a model with prediction intervals" in capsys.readouterr().err
    assert not (tmp_path / "u.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["-n", "5", "-o", "{tmp}/s.txt"], "suggestions are written as CSV"),
    (["-n", "5", "-o", "{tmp}/s.csv", "--per-cell", "h3:9"], "--per-cell needs the images' locations"),
    (["-n", "5", "-o", "{tmp}/s.csv", "--per-cell", "hex:9", "--locations", "{city}/locations.csv"],
     "--per-cell takes h3:RES"),
    (["-n", "5", "-o", "{tmp}/s.csv", "--duplicate-similarity", "2"], "--duplicate-similarity takes"),
])
def test_errors_are_one_line_with_the_fix(city, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, city=city) for a in args]
    assert suggest(city, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("s.*"))


def test_embeddings_of_another_model_are_refused(city, tmp_path, capsys):
    from percept.data.embeddings import write_part

    write_part(tmp_path / "other", "img", 0, np.ones((3, 5), np.float16), pd.DataFrame({"image_path": ["a", "b", "c"]}))
    assert percept_main(["suggest", "--model", str(city / "model.npz"), "-e", str(tmp_path / "other"), "-n", "2",
                         "-o", str(tmp_path / "s.csv")]) == 2
    assert "the embeddings have 5 dimensions but the model's vectors have 16" in capsys.readouterr().err


# ---------------------------------------------------------------- reading the CSV back, and the map


def test_read_suggestions_checks_its_input(tmp_path):
    good = tmp_path / "s.csv"
    good.write_text("rank,image,lon,lat\n2,b.jpg,4.9,52.3\n1,a.jpg,,\n")
    table = read_suggestions(good)
    assert table["image"].tolist() == ["a.jpg", "b.jpg"] and np.isnan(table["lon"][0])
    bad = tmp_path / "bad.csv"
    bad.write_text("image,lon,lat\na.jpg,east,52.3\n")
    with pytest.raises(PerceptError, match=r"row 1 \('a.jpg'\) holds 'east' for lon, not a number"):
        read_suggestions(bad)
    (tmp_path / "none.csv").write_text("name,lon\nx,1\n")
    with pytest.raises(PerceptError, match="has no image column"):
        read_suggestions(tmp_path / "none.csv")
    with pytest.raises(PerceptError, match="does not exist"):
        read_suggestions(tmp_path / "missing.csv")


def test_map_draws_the_suggestions_over_the_rated_points(city, tmp_path, capsys):
    suggestions = tmp_path / "s.csv"
    assert suggest(city, "--locations", str(city / "locations.csv"), "-n", "12", "-o", str(suggestions), "-q") == 0
    rated = tmp_path / "rated.geojson"
    assert percept_main(["rate", "--model", str(city / "model.npz"), "-e", str(city / "embeddings"), "--locations",
                         str(city / "locations.csv"), "--out", str(rated), "-q"]) == 0
    svg = tmp_path / "map.svg"
    assert percept_main(["map", "--rated", str(rated), "--category", "walkability", "--suggestions",
                         str(suggestions), "--out", str(svg), "-q"]) == 0
    text = svg.read_text()
    group = re.search(r'<g id="suggestions">(.*?)</g>\s*</g>', text, re.DOTALL)
    assert group is not None
    assert len(re.findall(r"<use ", group.group(1))) == 12
    assert "suggested for rating (12 images)" in text
    plain_svg = tmp_path / "plain.svg"
    assert percept_main(["map", "--rated", str(rated), "--category", "walkability", "--out", str(plain_svg),
                         "-q"]) == 0
    assert 'id="suggestions"' not in plain_svg.read_text() and "suggested for rating" not in plain_svg.read_text()
    assert percept_main(["map", "--rated", str(rated), "--category", "walkability", "--suggestions",
                         str(suggestions), "--out", str(tmp_path / "cells.geojson")]) == 2
    assert "--suggestions draws points on a map figure" in capsys.readouterr().err
    unlocated = tmp_path / "unlocated.csv"
    assert suggest(city, "-n", "3", "-o", str(unlocated), "-q") == 0
    assert percept_main(["map", "--rated", str(rated), "--category", "walkability", "--suggestions",
                         str(unlocated), "--out", str(tmp_path / "m.png")]) == 2
    assert "gives no image a location" in capsys.readouterr().err
