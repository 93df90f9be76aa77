"""Every model family on a checkerboard matrix with a known answer (implicit's test idea)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.modeling.families import load_model, make_model

FAMILIES = ("als", "bpr", "itemknn", "popular")
"""The families that read the matrix alone (the sequential one and blends: test_sequential, test_blend)."""

PARAMS = {
    "als": {"factors": 8, "iterations": 30, "regularization": 0.01, "alpha": 1.0},
    "bpr": {"factors": 8, "iterations": 300, "learning_rate": 0.05},
    "itemknn": {"K": 20},
}


def checkerboard(n: int = 20, holdout: int = 3) -> sp.csr_matrix:
    """User u likes item i iff u and i have the same parity, except a few held-out cells."""
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    mask = (rows % 2 == cols % 2) & ~((cols >= n - holdout * 2) & (rows < 4))
    return sp.csr_matrix(mask.astype(np.float32))


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "popular"])
def test_recommends_the_right_parity_and_never_seen_items(family: str) -> None:
    m = checkerboard()
    model = make_model(family, PARAMS[family], seed=1)
    model.fit(m)
    users = np.arange(4)
    ids, scores = model.recommend(users, m, n=3)
    assert ids.shape == (4, 3)
    for u in users:
        assert all(i % 2 == u % 2 for i in ids[u]), (family, u, ids[u])
        assert not set(ids[u]) & set(m[u].indices)  # seen items are filtered
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "popular"])
def test_similar_items_share_parity_and_exclude_the_item(family: str) -> None:
    m = checkerboard(holdout=0)
    model = make_model(family, PARAMS[family], seed=1)
    model.fit(m)
    items = np.array([0, 1, 6])
    ids, _ = model.similar_items(items, n=3)
    for item, row in zip(items, ids, strict=True):
        assert item not in row
        assert all(i % 2 == item % 2 for i in row)


def test_popular_baseline_ranks_by_users_and_filters_seen() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
    model = make_model("popular")
    model.fit(m)
    ids, scores = model.recommend(np.array([0, 3]), m, n=3)
    assert ids[0].tolist() == [2, 3, -1]  # item 2 (2 users), then 3 (0 users), then nothing left
    assert ids[1].tolist() == [0, 1, 2]
    assert scores[1].tolist() == [3.0, 2.0, 2.0]
    sim, _ = model.similar_items(np.array([0]), n=2)
    assert sim[0].tolist() == [1, 2]


def test_short_lists_are_padded_with_minus_one() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    model = make_model("itemknn", {"K": 5})
    model.fit(m)
    ids, _ = model.recommend(np.array([0]), m, n=5)
    assert ids.shape == (1, 5) and ids[0, 0] == 2 and (ids[0, 1:] == -1).all()  # implicit itself returns 1, 0


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_give_the_same_answers(family: str, tmp_path: Path) -> None:
    m = checkerboard()
    model = make_model(family, PARAMS.get(family, {}), seed=3)
    model.fit(m)
    model.save(tmp_path / family)
    again = load_model(tmp_path / family)
    users = np.arange(6)
    assert np.array_equal(model.recommend(users, m, 4)[0], again.recommend(users, m, 4)[0])
    assert again.params == model.params


def test_same_seed_same_model() -> None:
    m = checkerboard()
    for family in ("als", "bpr"):
        a, b = make_model(family, PARAMS[family], seed=7), make_model(family, PARAMS[family], seed=7)
        a.fit(m)
        b.fit(m)
        assert np.array_equal(a.recommend(np.arange(10), m, 5)[1], b.recommend(np.arange(10), m, 5)[1])


def test_unknown_family_and_parameter_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        make_model("svd")
    with pytest.raises(ValueError, match="no parameter"):
        make_model("als", {"factorz": 3})
    with pytest.raises(ValueError, match="cosine or bm25"):
        make_model("itemknn", {"similarity": "jaccard"}).fit(checkerboard())
