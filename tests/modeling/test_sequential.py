"""The sequential family: order that only it can learn, determinism, save/load, packing and the sampled loss."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.modeling.families import load_model, make_model
from recommender.modeling.matrix import Sequences
from recommender.modeling.models import Model, Validation
from recommender.modeling.sequential import pack, pack_last, windows

GROUPS = 8
TINY = {"hidden": 32, "heads": 2, "inner": 64, "blocks": 1, "epochs": 40, "batch_rows": 16, "learning_rate": 3e-3}


def shop(seqs: list[list[int]], n_items: int) -> tuple[Sequences, sp.csr_matrix]:
    """Sequences and the matching users x items matrix."""
    lengths = [len(s) for s in seqs]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
    rows = np.repeat(np.arange(len(seqs)), lengths)
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), (rows, items)), shape=(len(seqs), n_items))
    return Sequences(indptr, items), matrix


def planted() -> tuple[Sequences, sp.csr_matrix]:
    """Per group: A -> B -> C (30 users) and B -> E (10 users): C never follows B without A."""
    seqs: list[list[int]] = []
    for g in range(GROUPS):
        a, b, c, e = 4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3
        seqs += [[a, b, c]] * 30 + [[b, e]] * 10
    return shop(seqs, 4 * GROUPS)


def queries() -> tuple[Sequences, sp.csr_matrix]:
    """Users who did only B, and users who did A then B, in every group."""
    return shop([[4 * g + 1] for g in range(GROUPS)] + [[4 * g, 4 * g + 1] for g in range(GROUPS)], 4 * GROUPS)


def test_only_the_sequential_model_learns_that_c_follows_b_only_after_a(fitted: Model) -> None:
    seqs, matrix = queries()
    users = np.arange(2 * GROUPS)
    top, _ = fitted.recommend(users, matrix, 1, sequences=seqs)
    after_b = [4 * g + 3 for g in range(GROUPS)]  # E
    after_ab = [4 * g + 2 for g in range(GROUPS)]  # C
    assert top[:, 0].tolist() == after_b + after_ab
    _train_seqs, train = planted()
    knn = make_model("itemknn", {"similarity": "cosine"})
    knn.fit(train)
    knn_top, _ = knn.recommend(users, matrix, 1)
    assert knn_top[:GROUPS, 0].tolist() == after_ab  # B's neighbour is C (seen with it more often): wrong after B alone


def test_recommendations_exclude_seen_items_and_are_best_first(fitted: Model) -> None:
    seqs, matrix = queries()
    ids, scores = fitted.recommend(np.arange(2 * GROUPS), matrix, 5, sequences=seqs)
    for row in range(2 * GROUPS):
        assert not set(ids[row]) & set(seqs.of(row).tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    similar, _ = fitted.similar_items(np.array([0, 1]), 3)
    assert 0 not in similar[0] and 1 not in similar[1]


def test_the_same_seed_gives_the_same_scores_and_save_load_keeps_them(fitted: Model, tmp_path: Path) -> None:
    seqs, matrix = planted()
    again = make_model("sequential", TINY, seed=1)
    again.fit(matrix, sequences=seqs)
    q_seqs, q_matrix = queries()
    users = np.arange(2 * GROUPS)
    first = fitted.recommend(users, q_matrix, 6, sequences=q_seqs)
    assert np.array_equal(first[0], again.recommend(users, q_matrix, 6, sequences=q_seqs)[0])
    np.testing.assert_array_equal(first[1], again.recommend(users, q_matrix, 6, sequences=q_seqs)[1])
    fitted.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_array_equal(first[1], loaded.recommend(users, q_matrix, 6, sequences=q_seqs)[1])
    assert loaded.params == fitted.params


def test_early_stopping_keeps_the_best_epoch_and_a_refit_continues_from_it() -> None:
    seqs, _ = planted()
    held_out = [[4 * g, 4 * g + 1] for g in range(GROUPS)]  # A -> B users whose C is the validation item
    rows = [seqs.of(u).tolist() for u in range(len(seqs.indptr) - 1)] + held_out
    train, matrix = shop(rows, 4 * GROUPS)
    users = np.arange(len(rows) - GROUPS, len(rows))
    targets = np.array([4 * g + 2 for g in range(GROUPS)])
    model = make_model("sequential", TINY | {"epochs": 200, "patience": 2}, seed=0)
    model.fit(matrix, sequences=train, validation=Validation(users, targets))
    curve = model.history  # type: ignore[attr-defined]
    best = model.best_epoch  # type: ignore[attr-defined]
    assert len(curve) == best + 2 < 200  # stopped two epochs after the best
    assert curve[best - 1]["val_ndcg_at_10"] == max(r["val_ndcg_at_10"] for r in curve) > 0.5
    assert {"loss", "val_hr_at_10", "seconds"} <= set(curve[0])
    seqs2, matrix2 = planted()
    refit = model.refitted(matrix2, sequences=seqs2)
    assert len(refit.history) == 5 and refit.best_epoch == best  # type: ignore[attr-defined]  # refit_epochs, warm
    assert refit.history[0]["loss"] < curve[0]["loss"]  # type: ignore[attr-defined]  # it starts from the trained weights


def test_a_packed_row_never_lets_one_user_attend_to_another(fitted: Model) -> None:
    seqs, _ = shop([[0, 1, 2], [5, 6], [9], [12, 13, 14, 15]], 4 * GROUPS)
    alone = [fitted.user_vectors(np.array([u]), seqs)[0] for u in range(4)]  # type: ignore[attr-defined]
    together = fitted.user_vectors(np.arange(4), seqs)  # type: ignore[attr-defined]
    packed, _ = pack_last(seqs, np.arange(4), 50)
    assert len(packed.tokens) == 1  # all four in one row
    np.testing.assert_allclose(together, np.stack(alone), rtol=1e-5, atol=1e-5)


def test_packing_keeps_every_transition_once() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50, size=int(n)).tolist() for n in rng.integers(1, 30, size=40)]
    sequences, _ = shop(seqs, 50)
    packed = pack(sequences, max_len=8)
    got = sorted(
        (int(t) - 1, int(n) - 1) for t, n in zip(packed.tokens.ravel(), packed.targets.ravel(), strict=True) if n
    )
    expected = sorted((a, b) for s in seqs for a, b in itertools.pairwise(s))
    assert got == expected
    assert packed.positions.max() < 8
    assert [len(w) for w in windows(np.arange(20), 8)] == [9, 9, 4]  # newest first, overlapping by one


def test_the_sampled_loss_with_logq_learns_the_order_too() -> None:
    seqs, matrix = planted()
    model = make_model("sequential", TINY | {"sampled_above": 0, "negatives": 64, "epochs": 100}, seed=2)
    model.fit(matrix, sequences=seqs)
    q_seqs, q_matrix = queries()
    top, _ = model.recommend(np.arange(2 * GROUPS), q_matrix, 1, sequences=q_seqs)
    assert top[:GROUPS, 0].tolist() == [4 * g + 3 for g in range(GROUPS)]


def test_it_needs_sequences() -> None:
    _, matrix = planted()
    with pytest.raises(ValueError, match="sequences"):
        make_model("sequential", TINY).fit(matrix)
