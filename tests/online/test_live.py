"""The live catalog merge: newest wins per item, against a version's sets and against the items table."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from recommender.data.catalog import ITEM_SCHEMA, changed_rows
from recommender.online.live import LiveView, newer_than, unavailable
from recommender.registry.publish import catalog_view

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_live_changes_apply_over_a_version_only_when_newer() -> None:
    overrides = {"a": {"in_stock": (False, 200.0)}, "b": {"in_stock": (True, 50.0)}, "c": {"hidden": (True, 300.0)}}
    changed = newer_than(overrides, 100.0)
    assert changed == {"a": {"in_stock": False}, "c": {"hidden": True}}  # b's restock predates the version
    gone = unavailable(frozenset({"b", "d"}), frozenset({"e"}), changed)
    assert gone == {"a", "b", "c", "d", "e"}
    restocked = unavailable(frozenset({"d"}), frozenset({"d"}), {"d": {"in_stock": True}})
    assert restocked == {"d"}  # back in stock, but still hidden
    view = LiveView(read_at=100.0 + 5.0 + 1.0, out_of_stock=frozenset({"x"}), overrides=overrides).rebuilt()
    assert view.unavailable == {"a", "c", "x"}
    assert view.details("a", {"price": 3.0}) == {"price": 3.0, "in_stock": False}


def test_publish_merges_live_changes_newer_than_each_row() -> None:
    rows = pa.Table.from_pylist(
        [
            {"item_id": "a", "title": "A", "category": "c", "price": 1.0, "in_stock": True, "hidden": None,
             "attributes": '{"brand": "acme"}', "updated_at": T0},
            {"item_id": "b", "title": "B", "category": "c", "price": 2.0, "in_stock": False, "hidden": None,
             "attributes": None, "updated_at": T0},
        ],
        schema=ITEM_SCHEMA,
    )  # fmt: skip
    t = T0.timestamp()
    live = {"a": {"in_stock": (False, t + 10)}, "b": {"in_stock": (True, t - 10)}, "z": {"hidden": (True, t + 1)}}
    view = catalog_view(rows, live, read_at=t + 20)
    assert sorted(view.out_of_stock) == ["a", "b"]  # a sold out since; b's restock is older than its row
    assert view.hidden == ["z"] and '"brand": "acme"' in view.details["a"]


def test_stored_changes_are_idempotent_and_never_undo_a_newer_row() -> None:
    current = pa.Table.from_pylist(
        [{"item_id": "a", "title": "A", "category": "c", "price": 1.0, "in_stock": True, "hidden": None,
          "attributes": None, "updated_at": T0}],
        schema=ITEM_SCHEMA,
    )  # fmt: skip
    later = datetime(2026, 12, 2, tzinfo=UTC)
    changes = [("a", {"in_stock": False}, later), ("a", {"price": 9.0}, later), ("new", {"hidden": True}, later)]
    once = changed_rows(current, changes)
    rows = {r["item_id"]: r for r in once.to_pylist()}
    assert rows["a"]["in_stock"] is False and rows["a"]["price"] == 9.0 and rows["a"]["updated_at"] == later
    assert rows["new"]["hidden"] is True and rows["new"]["title"] is None
    assert changed_rows(once, changes).to_pylist() == once.to_pylist()  # applied twice: the same rows
    stale = [("a", {"in_stock": True}, T0)]  # older than the stored row
    assert changed_rows(once, stale).to_pylist()[0]["in_stock"] is False
