"""The survey's domain over distinct images, against a numpy brute force: the threshold, the mean
nearest-other distance and the dissimilarity index; duplicates and panorama crops count once."""

from __future__ import annotations

import brute_force
import numpy as np
import pytest

from percept.categories import CATEGORIES
from percept.model.domain import chord_distance, dissimilarity, distinct_images, survey_domain
from percept.model.knn import l2_normalise


def unit(rng, n, dim):
    return l2_normalise(rng.normal(size=(n, dim)))


def named(n, prefix="img"):
    return [f"{prefix}_{i}.jpg" for i in range(n)]


def test_threshold_and_mean_distance_equal_the_brute_force_over_images():
    rng = np.random.default_rng(1)
    vectors = unit(rng, 120, 16)
    rows = {c: np.repeat(np.arange(120), rng.integers(1, 4, 120)) for c in CATEGORIES}  # several ratings each
    domain = survey_domain({c: vectors[r] for c, r in rows.items()},
                           {c: [f"img_{i}.jpg" for i in r] for c, r in rows.items()})
    nearest = brute_force.nearest_other(vectors, np.arange(120))
    assert domain.groups == 120
    assert domain.threshold == pytest.approx(np.percentile(nearest, 5), abs=1e-12)
    assert domain.mean_distance == pytest.approx(np.mean(np.sqrt(2 - 2 * nearest)), abs=1e-12)


def test_a_survey_with_every_third_image_duplicated_has_the_same_domain():
    rng = np.random.default_rng(2)
    vectors = unit(rng, 90, 12)
    names = named(90)
    plain = survey_domain({c: vectors for c in CATEGORIES}, {c: names for c in CATEGORIES})
    copies = np.arange(0, 90, 3)
    doubled = np.concatenate([vectors, vectors[copies]])
    doubled_names = names + [f"copy_of_{i}.jpg" for i in copies]  # the same picture under another name
    with_copies = survey_domain({c: doubled for c in CATEGORIES}, {c: doubled_names for c in CATEGORIES})
    assert with_copies.threshold == plain.threshold
    assert with_copies.mean_distance == plain.mean_distance
    assert with_copies.groups == plain.groups == 90
    # counted by name, each copy would be its twin's nearest image (similarity 1), making the survey look denser
    by_name = brute_force.nearest_other(doubled, np.arange(len(doubled)))
    assert (by_name > 1 - 1e-12).sum() == 2 * len(copies)
    assert np.mean(np.sqrt(np.maximum(2 - 2 * by_name, 0))) < plain.mean_distance


def test_crops_of_one_panorama_count_once():
    rng = np.random.default_rng(3)
    panoramas = unit(rng, 40, 10)
    crops, names, panorama_of = [], [], []
    for p, centre in enumerate(panoramas):
        for x in range(4):  # four near-identical crops
            crops.append(centre + 0.02 * rng.normal(size=10))
            names.append(f"{1000 + p}_x{x}.jpg")
            panorama_of.append(p)
    crops = l2_normalise(np.array(crops))
    panorama_of = np.array(panorama_of)
    domain = survey_domain({c: crops for c in CATEGORIES}, {c: names for c in CATEGORIES})
    per_crop = brute_force.nearest_other(crops, panorama_of)
    per_panorama = np.array([per_crop[panorama_of == p].max() for p in range(40)])
    assert domain.groups == 40
    assert domain.threshold == pytest.approx(np.percentile(per_panorama, 5), abs=1e-12)
    assert distinct_images({c: crops for c in CATEGORIES}, {c: names for c in CATEGORIES}).groups == 40
    # without names (a published file) each distinct vector is an image
    assert distinct_images({c: crops for c in CATEGORIES}).groups == 160


def test_unnamed_files_group_identical_vectors():
    rng = np.random.default_rng(4)
    vectors = unit(rng, 30, 8)
    vectors[7] = vectors[3]
    domain = survey_domain({c: vectors for c in CATEGORIES})
    image_of = np.where(np.arange(30) == 7, 3, np.arange(30))
    nearest = np.delete(brute_force.nearest_other(vectors, image_of), 7)
    assert domain.groups == 29
    assert domain.threshold == pytest.approx(np.percentile(nearest, 5), abs=1e-12)
    assert survey_domain({c: vectors[:1] for c in CATEGORIES}) is None


def test_dissimilarity_is_the_chord_distance_over_the_mean():
    best = np.array([1.0, 0.5, -1.0, np.nan])
    np.testing.assert_allclose(chord_distance(best), [0.0, 1.0, 2.0, np.nan])
    np.testing.assert_allclose(dissimilarity(best, 0.5), [0.0, 2.0, 4.0, np.nan])
    assert np.isnan(dissimilarity(best, None)).all()
