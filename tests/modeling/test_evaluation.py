"""Metrics: hand-computed cases and a cross-check against implicit.evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k

from recommender.modeling.evaluation import accuracy_at, beyond_accuracy, evaluate, gini, target_ranks
from recommender.modeling.families import make_model


def test_hand_computed_accuracy() -> None:
    recommended = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6], [0, -1, -1]])
    targets = np.array([3, 1, 5, 0])
    ranks = target_ranks(recommended, targets)
    assert ranks.tolist() == [1, 0, -1, 0]
    m = accuracy_at(ranks, 3)
    assert m["hr_at_3"] == pytest.approx(3 / 4)
    assert m["ndcg_at_3"] == pytest.approx((1 / math.log2(3) + 1 + 0 + 1) / 4)
    assert m["map_at_3"] == pytest.approx((1 / 2 + 1 + 0 + 1) / 4)
    assert m["precision_at_3"] == pytest.approx(3 / 4 / 3)
    assert m["recall_at_3"] == pytest.approx(3 / 4)
    assert accuracy_at(ranks, 1)["hr_at_1"] == pytest.approx(2 / 4)


def test_beyond_accuracy_hand_computed() -> None:
    recommended = np.array([[0, 1], [0, 2]])
    popularity = np.array([10, 5, 1, 0])
    m = beyond_accuracy(recommended, popularity, k=2)
    assert m["coverage_at_2"] == pytest.approx(3 / 4)
    # percentile ranks of popularity [10,5,1,0] -> [1.0, .75, .5, .25]; shown 0,1,0,2
    assert m["popularity_percentile_at_2"] == pytest.approx((1 + 0.75 + 1 + 0.5) / 4)
    assert gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)


def test_matches_implicit_evaluation_on_the_same_inputs() -> None:
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 80)) < 0.08).astype(np.float32)
    train = sp.csr_matrix(dense)
    users = np.flatnonzero(dense.sum(axis=1) < 70)
    targets = np.array([rng.choice(np.flatnonzero(dense[u] == 0)) for u in users])
    test = sp.csr_matrix((np.ones(len(users), np.float32), (users, targets)), shape=train.shape)
    model = make_model("itemknn", {"K": 30, "similarity": "cosine"})
    model.fit(train)
    ours = evaluate(model, train, users, targets, k=10).metrics
    theirs = ranking_metrics_at_k(model.model, train, test, K=10, show_progress=False)  # type: ignore[attr-defined]
    assert ours["hr_at_10"] > 0.05  # a meaningful comparison, not 0 == 0
    assert ours["hr_at_10"] == pytest.approx(theirs["precision"], abs=1e-9)
    assert ours["ndcg_at_10"] == pytest.approx(theirs["ndcg"], abs=1e-9)
    assert ours["map_at_10"] == pytest.approx(theirs["map"], abs=1e-9)


def test_per_user_table_and_curve() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=np.float32))
    model = make_model("popular")
    model.fit(train)
    result = evaluate(model, train, np.array([0, 1]), np.array([1, 2]), k=2, ks=(1, 2))
    assert result.per_user["history"].tolist() == [2, 2]
    assert result.per_user["rank"].tolist() == [0, 0]
    assert set(result.curve) == {1, 2} and result.curve[1]["hr_at_1"] == 1.0
