"""The production model scored on what users did after its training data (forward accuracy)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from recommender.modeling.bundle import Bundle
from recommender.modeling.families import make_model
from recommender.modeling.matrix import Vocabulary, Weighting
from recommender.ops.monitoring import forward_accuracy

SINCE = datetime(2025, 6, 1, tzinfo=UTC)


def bundle() -> Bundle:
    """Popularity over a known history: x (2 users), y (1), z (1), w (0)."""
    vocab = Vocabulary(users=np.array(["a", "b", "c"]), items=np.array(["x", "y", "z", "w"]))
    history = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    model = make_model("popular")
    model.fit(history)
    return Bundle(model=model, vocab=vocab, weighting=Weighting(event_weights={"view": 1.0}), user_items=history)


def events(rows: list[tuple[str, str, int]]) -> pa.Table:
    """(user, item, days after SINCE) -> a table like the events table's columns."""
    stamps = [datetime.fromtimestamp(SINCE.timestamp() + d * 86400, UTC) for _, _, d in rows]
    return pa.table(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
        }
    )


def test_each_known_users_first_new_item_after_the_training_data_is_the_target() -> None:
    later = events(
        [
            ("a", "z", 3),  # a's second new item: not the target
            ("a", "x", 1),  # in a's history: skipped
            ("a", "y", 2),  # a's first new item -> target y
            ("b", "q", 1),  # an item the model never saw: skipped
            ("b", "w", 2),  # b's target w
            ("new", "x", 1),  # a user the model never saw: skipped
            ("c", "y", -5),  # before the training data ended: ignored
        ]
    )
    got = forward_accuracy(bundle(), later, SINCE.timestamp(), k=2)
    # popular for a (history x): [y, z] -> y at rank 1; for b (x, y): [z, w] -> w at rank 2
    assert got["forward_users"] == 2
    assert got["forward_hr_at_2"] == 1.0
    assert got["forward_ndcg_at_2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert forward_accuracy(bundle(), later, SINCE.timestamp(), k=1)["forward_hr_at_1"] == 0.5


def test_no_new_activity_scores_nobody() -> None:
    assert forward_accuracy(bundle(), events([("a", "x", 1), ("c", "y", -1)]), SINCE.timestamp(), k=2) == {
        "forward_users": 0.0
    }


@pytest.mark.parametrize(
    "rows",
    [[], [("c", "y", -2)], [("new", "x", 1), ("a", "unknown", 2)]],
    ids=["no events at all", "nothing after the training data", "only unknown users and items"],
)
def test_no_scorable_event_after_the_training_data_reports_zero_users(rows: list[tuple[str, str, int]]) -> None:
    """Right after a retrain nothing is newer than the training data: reported, not a crash."""
    assert forward_accuracy(bundle(), events(rows), SINCE.timestamp(), k=2) == {"forward_users": 0.0}
