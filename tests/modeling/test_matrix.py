"""Confidence weighting, time decay and the leave-last-out split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from recommender.data.events import EVENT_SCHEMA
from recommender.modeling.matrix import Weighting, confidence, interactions_from_events, leave_last_out

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WEIGHTS = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}


def events(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    """(user, item, type, day) rows as a stored events table."""
    n = len(rows)
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": [T0 + timedelta(days=r[3]) for r in rows],
            "session_id": [None] * n,
            "quantity": [None] * n,
            "price": [None] * n,
            "recommendation_id": [None] * n,
            "source": ["t"] * n,
            "ingest_id": ["i"] * n,
        },
        schema=EVENT_SCHEMA,
    )


def test_event_weights_are_summed_per_cell() -> None:
    inter = interactions_from_events(
        events([("a", "x", "view", 0), ("a", "x", "purchase", 1), ("b", "y", "add_to_cart", 1)])
    )
    m = confidence(inter, np.ones(len(inter), bool), Weighting(WEIGHTS)).toarray()
    assert inter.vocab.users.tolist() == ["a", "b"] and inter.vocab.items.tolist() == ["x", "y"]
    assert m.tolist() == [[9.0, 0.0], [0.0, 4.0]]


def test_time_decay_halves_weight_per_half_life() -> None:
    inter = interactions_from_events(events([("a", "x", "view", 0), ("a", "y", "view", 10), ("b", "z", "view", 20)]))
    m = confidence(inter, np.ones(len(inter), bool), Weighting(WEIGHTS, half_life_days=10)).toarray()
    assert m[0, 0] == pytest.approx(0.25) and m[0, 1] == pytest.approx(0.5) and m[1, 2] == pytest.approx(1.0)


def test_unknown_event_types_weigh_nothing_and_log_scale() -> None:
    inter = interactions_from_events(events([("a", "x", "view", 0), ("a", "y", "wishlist", 0)]))
    m = confidence(inter, np.ones(len(inter), bool), Weighting(WEIGHTS, log_scale=True)).toarray()
    assert m[0, 0] == pytest.approx(np.log1p(1.0)) and m[0, 1] == 0.0


def test_bm25_changes_weights_but_not_the_pattern() -> None:
    rows = [
        ("a", "x", "view", 0),
        ("a", "y", "view", 1),
        ("b", "x", "view", 0),
        ("c", "x", "purchase", 2),
        ("d", "z", "view", 0),
        ("e", "z", "view", 0),
        ("e", "y", "view", 0),
    ]
    inter = interactions_from_events(events(rows))
    plain = confidence(inter, np.ones(len(inter), bool), Weighting(WEIGHTS))
    bm25 = confidence(inter, np.ones(len(inter), bool), Weighting(WEIGHTS, bm25=True))
    assert (plain.toarray() > 0).tolist() == (bm25.toarray() > 0).tolist()
    assert not np.allclose(plain.toarray(), bm25.toarray())


def test_leave_last_out_holds_out_the_last_two_distinct_items() -> None:
    rows = [
        ("a", "p", "view", 0),
        ("a", "q", "view", 1),
        ("a", "p", "purchase", 2),
        ("a", "r", "view", 3),
        ("a", "s", "view", 4),
        ("a", "s", "add_to_cart", 5),
        ("b", "p", "view", 0),
        ("b", "q", "view", 1),
    ]
    inter = interactions_from_events(events(rows))
    split = leave_last_out(inter)
    items = inter.vocab.items
    assert inter.vocab.users[split.users].tolist() == ["a"]  # b has only 2 distinct items
    assert items[split.test_items].tolist() == ["s"] and items[split.val_items].tolist() == ["r"]
    train_items = {items[i] for i, u in zip(inter.item[split.train], inter.user[split.train], strict=True) if u == 0}
    assert train_items == {"p", "q"}  # both events of s and the event of r are held out
    assert split.train_val.sum() == split.train.sum() + 1
    assert (split.train_val | ~split.train).all()


def test_empty_snapshot_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ingest some first"):
        interactions_from_events(events([]))
