"""Frequently bought together and repurchase intervals on a shop with planted behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from recommender.modeling.matrix import interactions_from_events
from recommender.modeling.together import (
    baskets,
    evaluate_together,
    last_purchases,
    repurchase_intervals,
    together,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAIRS = [("phone", "case"), ("camera", "sd-card"), ("razor", "blades")]


def planted_shop(seed: int = 3) -> pa.Table:
    """300 users; each session buys a random filler item and, half of the time, one planted pair
    (both halves); filler items are popular, so popularity alone cannot find the partner."""
    rng = np.random.default_rng(seed)
    fillers = [f"f{k}" for k in range(8)]
    rows = []
    for u in range(300):
        at = T0 + timedelta(days=int(rng.integers(0, 20)))
        for session in range(3):
            start = at + timedelta(days=2 * session)
            items = [fillers[int(rng.integers(0, 3))], fillers[int(rng.integers(3, 8))]]
            if rng.random() < 0.5:
                items += list(PAIRS[int(rng.integers(0, len(PAIRS)))])
            for k, item in enumerate(items):
                stamp = start + timedelta(minutes=3 * k)
                rows.append({"user_id": f"u{u}", "item_id": item, "event_type": "view", "timestamp": stamp})
                rows.append({"user_id": f"u{u}", "item_id": item, "event_type": "purchase", "timestamp": stamp})
    return pa.Table.from_pylist(rows, schema=_SCHEMA)


_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()), ("timestamp", pa.timestamp("us"))]
)


def test_together_finds_the_planted_pairs_and_beats_popularity() -> None:
    inter = interactions_from_events(planted_shop())
    found = baskets(inter)
    assert found.matrix.shape[0] == 900 and found.matrix.max() == 1.0  # one basket per session
    ids, scores = together(found.matrix, 3)
    names = list(inter.vocab.items)
    for a, b in PAIRS:
        assert names[ids[names.index(a), 0]] == b and names[ids[names.index(b), 0]] == a
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    quality = evaluate_together(found, n=1)
    assert quality["together_baskets"] == 300
    assert quality["together_hr"] > quality["together_popular_hr"] + 0.2


def test_views_alone_make_no_baskets_when_a_shop_records_purchases() -> None:
    table = planted_shop()
    views = table.filter(pa.compute.equal(table.column("event_type"), "view"))
    assert baskets(interactions_from_events(views)).matrix.shape[0] == 900  # no purchases: every event counts
    only_purchases = baskets(interactions_from_events(table))
    assert only_purchases.matrix.sum() == baskets(interactions_from_events(views)).matrix.sum()


def test_repurchase_intervals_and_last_purchases() -> None:
    rows = []
    for u in range(5):  # coffee every 10 days (4 repurchases each), a kettle once
        for k in range(5):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": "beans",
                    "event_type": "purchase",
                    "timestamp": T0 + timedelta(days=10 * k, hours=u),
                }
            )
        rows.append({"user_id": f"u{u}", "item_id": "kettle", "event_type": "purchase", "timestamp": T0})
    inter = interactions_from_events(pa.Table.from_pylist(rows, schema=_SCHEMA))
    category = np.array(["coffee" if i == "beans" else "kitchen" for i in inter.vocab.items], dtype=object)
    intervals = repurchase_intervals(inter, category)
    assert intervals == {"coffee": 10 * 86400.0}  # the kettle was never bought again
    last = last_purchases(inter)
    beans = list(inter.vocab.items).index("beans")
    assert last[0, beans] == (T0 + timedelta(days=40)).timestamp()
