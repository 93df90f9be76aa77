"""A user's affinity for an item is the score the model ranks that item by for them, per family; for several
items, the mean; a blend standardizes its members' over the users; the popular family has none."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.modeling.blend import BlendModel
from recommender.modeling.families import make_model
from recommender.modeling.models import Model
from tests.modeling.test_models import PARAMS, checkerboard
from tests.modeling.test_sequential import planted


@pytest.mark.parametrize("family", ["als", "bpr", "itemknn"])
def test_the_affinity_for_an_item_is_the_score_the_model_ranks_it_by(family: str) -> None:
    m = checkerboard()
    model = make_model(family, PARAMS[family], seed=1)
    model.fit(m)
    users = np.arange(m.shape[0])
    ids, scores = model.recommend(users[:4], m, n=3)
    for u in range(4):
        for item, score in zip(ids[u], scores[u], strict=True):
            assert model.affinity(users, m, np.array([item]))[u] == pytest.approx(score, rel=1e-4, abs=1e-5)
    pair = np.array([ids[0, 0], ids[1, 0]])
    both = model.affinity(users, m, pair)
    halves = (model.affinity(users, m, pair[:1]) + model.affinity(users, m, pair[1:])) / 2
    assert both == pytest.approx(halves, rel=1e-4, abs=1e-6)
    even = model.affinity(users, m, np.array([0]))  # an even item: the even users are its audience
    assert set(np.argsort(-even, kind="stable")[:10] % 2) == {0}


def test_the_sequential_affinity_is_its_score_and_a_blend_standardizes_its_members(fitted: Model) -> None:
    seqs, matrix = planted()
    users = np.arange(matrix.shape[0])
    ids, scores = fitted.recommend(users[:5], matrix, n=2, sequences=seqs)
    for u in range(5):
        got = fitted.affinity(users, matrix, ids[u, :1], sequences=seqs)
        assert got is not None and got[u] == pytest.approx(scores[u, 0], rel=1e-3, abs=1e-4)
    knn = make_model("itemknn", {"K": 5}, seed=1)
    knn.fit(matrix)
    blend = BlendModel.of(fitted, knn, "rank", 0.7, seed=1)
    cols = ids[0, :1]
    a, b = fitted.affinity(users, matrix, cols, sequences=seqs), knn.affinity(users, matrix, cols)
    assert a is not None and b is not None
    expected = 0.7 * (a - a.mean()) / a.std() + 0.3 * (b - b.mean()) / b.std()
    assert blend.affinity(users, matrix, cols, sequences=seqs) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_the_popular_family_has_no_audience() -> None:
    m = checkerboard()
    model = make_model("popular")
    model.fit(m)
    assert model.affinity(np.arange(4), m, np.array([0])) is None
