"""Blends: fusion by score and by rank, weights chosen on validation, one model saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender.modeling.blend import BlendModel, choose, fuse
from recommender.modeling.families import load_model, make_model
from recommender.modeling.models import Model
from tests.modeling.test_sequential import GROUPS, planted, queries


def lists(*rows: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    scores = np.zeros((len(rows), width), dtype=np.float32)
    for r, row in enumerate(rows):
        for c, (item, score) in enumerate(row):
            ids[r, c], scores[r, c] = item, score
    return ids, scores


def test_rank_fusion_sums_reciprocal_ranks_and_score_fusion_normalizes() -> None:
    a = lists([(1, 10.0), (2, 9.0), (3, 0.0)])
    b = lists([(3, 0.9), (2, 0.8), (4, 0.1)])
    ids, scores = fuse(a, b, 0.5, "rank", 4)
    assert ids[0].tolist() == [3, 2, 1, 4]  # 3: ranks 2 and 0 beat 2: ranks 1 and 1; 1: rank 0 once
    assert scores[0, :2].tolist() == pytest.approx([0.5 / 62 + 0.5 / 60, 0.5 / 61 + 0.5 / 61])
    ids, scores = fuse(a, b, 0.9, "score", 4)  # a: 1 -> 1.0, 2 -> 0.9, 3 -> 0.0; b: 3 -> 1.0, 2 -> 0.875, 4 -> 0
    assert ids[0].tolist() == [1, 2, 3, 4]
    assert scores[0].tolist() == pytest.approx([0.9, 0.9 * 0.9 + 0.1 * 0.875, 0.1, 0.0])
    ids, _ = fuse(lists([(5, 1.0)]), lists([(-1, 0.0)]), 0.5, "rank", 3)
    assert ids[0].tolist() == [5, -1, -1]  # padding is never an item


def test_the_weight_is_chosen_on_the_validation_targets() -> None:
    targets = np.arange(100, 120)  # ids above the decoy's: an even blend ranks the decoy (99) first
    good = lists(*[[(t, 1.0), (99, 0.5)] for t in targets])
    bad = lists(*[[(99, 1.0), (t, 0.5)] for t in targets])
    _, weight, ndcg = choose(good, bad, targets, 1)
    assert weight > 0.5 and ndcg == 1.0  # leaning on the list that ranks the target first
    _, weight, ndcg = choose(bad, good, targets, 1)
    assert weight < 0.5 and ndcg == 1.0


def test_a_blend_is_one_model_saved_and_loaded_and_refitted(fitted: Model, tmp_path: Path) -> None:
    seqs, matrix = planted()
    knn = make_model("itemknn")
    knn.fit(matrix)
    blend = BlendModel.of(fitted, knn, "rank", 0.8, seed=1)
    assert blend.uses_order
    q_seqs, q_matrix = queries()
    users = np.arange(2 * GROUPS)
    ids, scores = blend.recommend(users, q_matrix, 3, sequences=q_seqs)
    assert ids[:GROUPS, 0].tolist() == [4 * g + 3 for g in range(GROUPS)]  # the sequential member leads
    blend.save(tmp_path / "b")
    again = load_model(tmp_path / "b")
    assert isinstance(again, BlendModel) and again.params == blend.params
    np.testing.assert_array_equal(scores, again.recommend(users, q_matrix, 3, sequences=q_seqs)[1])
    part = again.sequence_part()
    assert part is not None and part[0].family == "sequential" and part[1] == 0.8
    refit = again.refitted(matrix, sequences=seqs)
    assert isinstance(refit, BlendModel) and [m.family for m in refit.members] == ["sequential", "itemknn"]
    assert (refit.params["fusion"], refit.params["weight"]) == ("rank", 0.8)


def test_a_blend_fits_its_members_from_its_params() -> None:
    _, matrix = planted()
    blend = make_model("blend", {"members": [{"family": "itemknn"}, {"family": "popular"}], "fusion": "score"})
    assert not blend.uses_order and blend.sequence_part() is None
    blend.fit(matrix)
    ids, _ = blend.recommend(np.arange(3), matrix, 4)
    assert (ids >= 0).all() and not any(set(ids[u]) & set(matrix[u].indices) for u in range(3))


def test_a_blend_needs_two_members_and_a_known_fusion() -> None:
    with pytest.raises(ValueError, match="two members"):
        make_model("blend", {"members": [{"family": "itemknn"}]})
    with pytest.raises(ValueError, match="fusion"):
        make_model("blend", {"members": [{"family": "itemknn"}, {"family": "als"}], "fusion": "max"})
