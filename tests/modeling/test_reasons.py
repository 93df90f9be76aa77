"""The past item behind each recommendation, per family, against a brute-force computation of the same rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.data.reasons import nearest, unit
from recommender.modeling.blend import BlendModel
from recommender.modeling.families import make_model
from recommender.modeling.models import Model
from recommender.modeling.reasons import histories, top_contributor
from tests.modeling.test_models import PARAMS, checkerboard
from tests.modeling.test_sequential import planted


def brute_nearest(space: np.ndarray, history: np.ndarray, item: int) -> int:
    return int(history[np.argmax(space[history] @ space[item])])


@pytest.mark.parametrize("family", ["als", "bpr", "itemknn"])
def test_each_recommendation_has_the_past_item_the_family_says_is_behind_it(family: str) -> None:
    m = checkerboard()
    model = make_model(family, PARAMS[family], seed=1)
    model.fit(m)
    users = np.arange(4)  # each has three held-out items of their own parity: their top 3
    ids, _ = model.recommend(users, m, n=3)
    behind = model.because(users, m, ids)
    assert behind is not None and behind.shape == ids.shape
    for u in users:
        row = m[u]
        for item, past in zip(ids[u], behind[u], strict=True):
            assert past in row.indices and past % 2 == item % 2  # one of theirs, on the checkerboard's side
            if family == "itemknn":  # the largest term of the score's sum
                terms = row.data * model.model.similarity[row.indices][:, [item]].toarray().ravel()
                assert past == row.indices[np.argmax(terms)]
            else:
                space = model.item_space()
                assert space is not None and past == brute_nearest(space, row.indices, int(item))


def test_the_largest_term_wins_not_the_largest_similarity() -> None:
    similarity = sp.csr_matrix(np.array([[0, 0, 0.9], [0, 0, 0.5], [0.9, 0.5, 0]], dtype=np.float32))
    history, weights = np.array([[0, 1, -1]]), np.array([[1.0, 3.0, 0.0]], dtype=np.float32)
    assert top_contributor(similarity, history, weights, np.array([[2, -1]])).tolist() == [[1, -1]]  # 3 x 0.5 > 0.9
    assert top_contributor(similarity, np.array([[-1, -1]]), np.zeros((1, 2)), np.array([[2]])).tolist() == [[-1]]


def test_nearest_skips_padding_and_users_without_history() -> None:
    space = unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.1]]))
    history = np.array([[1, 3, -1], [-1, -1, -1]])
    found = nearest(space, history, np.array([[0, 2, -1], [0, 1, 2]]))
    assert found.tolist() == [[3, 3, -1], [-1, -1, -1]]


def test_histories_keep_each_users_heaviest_items() -> None:
    m = sp.csr_matrix(np.array([[1.0, 5.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32))
    cols, weights = histories(np.array([0, 1]), m, size=2)
    assert cols.tolist() == [[1, 2], [-1, -1]] and weights.tolist() == [[5.0, 3.0], [0.0, 0.0]]


def test_the_popular_model_has_no_past_item_to_name() -> None:
    m = checkerboard()
    model = make_model("popular")
    model.fit(m)
    assert model.because(np.arange(2), m, model.recommend(np.arange(2), m, n=3)[0]) is None


def test_the_sequential_family_names_the_nearest_past_item_and_explains_by_it(fitted: Model) -> None:
    seqs, matrix = planted()
    users = np.arange(0, matrix.shape[0], 7)
    ids, _ = fitted.recommend(users, matrix, n=3, sequences=seqs)
    behind = fitted.because(users, matrix, ids)
    space = fitted.item_space()
    assert behind is not None and space is not None
    for k, u in enumerate(users):
        past = np.unique(seqs.of(int(u)))
        for item, found in zip(ids[k], behind[k], strict=True):
            assert found == brute_nearest(space, past, int(item))
        explained = fitted.explain(int(u), matrix, int(ids[k, 0]), n=10, sequences=seqs)
        assert explained[0][0] == behind[k, 0] and {i for i, _ in explained} == set(past.tolist())
        assert [c for _, c in explained] == sorted((c for _, c in explained), reverse=True)


def test_a_blend_takes_its_second_members_reason_where_the_first_has_none(fitted: Model) -> None:
    seqs, matrix = planted()
    knn = make_model("itemknn", {"K": 5}, seed=1)
    knn.fit(matrix)
    blend = BlendModel.of(knn, fitted, "rank", 0.5, seed=1)
    users = np.arange(0, matrix.shape[0], 5)
    ids, _ = blend.recommend(users, matrix, n=4, sequences=seqs)
    first, second, both = (
        knn.because(users, matrix, ids),
        fitted.because(users, matrix, ids),
        blend.because(users, matrix, ids),
    )
    assert first is not None and second is not None and both is not None
    assert (both == np.where(first >= 0, first, second)).all() and (both[ids >= 0] >= 0).all()
