"""The API's numpy forward pass equals the trained JAX network, on the weights publishing exports."""

from __future__ import annotations

import numpy as np

from recommender.modeling.families import make_model
from recommender.modeling.sequential import export_bytes
from recommender.online.sequence import SequenceScorer
from tests.modeling.test_sequential import GROUPS, TINY, planted, shop


def test_numpy_scores_equal_the_jax_model_scores() -> None:
    seqs, matrix = planted()
    model = make_model("sequential", TINY | {"blocks": 2, "epochs": 5}, seed=4)
    model.fit(matrix, sequences=seqs)
    items = np.array([f"item-{i}" for i in range(4 * GROUPS)], dtype=object)
    blob = export_bytes(model, items)
    assert blob is not None
    scorer = SequenceScorer.from_bytes(blob)
    assert scorer.weight == 1.0 and scorer.items == items.tolist() and scorer.blocks == 2
    rng = np.random.default_rng(0)
    histories = [rng.integers(0, 4 * GROUPS, size=int(n)).tolist() for n in (1, 3, 7, 49, 50, 80)]
    query, _ = shop(histories, 4 * GROUPS)
    expected = model.user_vectors(np.arange(len(histories)), query) @ model.item_vectors().T  # type: ignore[attr-defined]
    for row, history in enumerate(histories):
        got = scorer.scores(history)
        np.testing.assert_allclose(got, expected[row], rtol=1e-4, atol=1e-4)
        ids, scores = scorer.top([str(items[i]) for i in history], 5)
        unseen = [i for i in np.argsort(-expected[row], kind="stable") if i not in set(history[-50:])]
        assert ids[0] == items[unseen[0]]
        assert not set(ids) & {str(items[i]) for i in history[-50:]} and scores == sorted(scores, reverse=True)


def test_unknown_items_are_skipped_and_an_empty_sequence_gives_nothing() -> None:
    seqs, matrix = planted()
    model = make_model("sequential", TINY | {"epochs": 1}, seed=0)
    model.fit(matrix, sequences=seqs)
    scorer = SequenceScorer.from_bytes(export_bytes(model, np.array([str(i) for i in range(4 * GROUPS)])) or b"")
    assert scorer.top(["nope"], 5) == ([], [])
    assert scorer.top(["nope", "1"], 3)[0] == scorer.top(["1"], 3)[0]
    assert make_model("itemknn").sequence_part() is None
