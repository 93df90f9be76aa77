"""The live catalog merge: newest wins per item, against a version's sets and against the items table."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from recommender.data.catalog import ITEM_SCHEMA, changed_rows
from recommender.online.live import newer_than
from recommender.online.livestate import LiveState
from recommender.online.versions import VersionState
from recommender.registry.publish import catalog_view

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def version(read_at: float, out_of_stock: set[str] = frozenset(), hidden: set[str] = frozenset()) -> VersionState:  # type: ignore[assignment]
    return VersionState("v", "1", read_at, frozenset(out_of_stock), frozenset(hidden), {})


def test_live_changes_apply_over_a_version_only_when_newer() -> None:
    overrides = {"a": {"in_stock": (False, 200.0)}, "b": {"in_stock": (True, 50.0)}, "c": {"hidden": (True, 300.0)}}
    assert newer_than(overrides, 100.0) == {"a": {"in_stock": False}, "c": {"hidden": True}}  # b's restock is older
    live = LiveState(overrides={k: dict(v) for k, v in overrides.items()})
    state = version(100.0 + 5.0 + 1.0, out_of_stock={"b", "d", "x"}, hidden={"e"})  # read 1 s past the clock margin
    gone = live.unavailable(state)
    assert {i for i in "abcdexz" if i in gone} == {"a", "b", "c", "d", "e", "x"}  # b's restock predates the version
    assert live.details(state, {"a": {"price": 3.0}})["a"] == {"price": 3.0, "in_stock": False}
    live.apply("d", {"in_stock": True}, 400.0)
    both = version(0.0, out_of_stock={"d"}, hidden={"d"})
    assert "d" in live.unavailable(both) and "d" not in live.unavailable(version(0.0, out_of_stock={"d"}))
    live.apply("d", {"in_stock": False}, 399.0)  # an older change arriving late loses
    assert live.overrides["d"]["in_stock"] == (True, 400.0)


def test_pruning_drops_only_what_publishing_compacted_away() -> None:
    live = LiveState()
    live.apply("a", {"price": 1.0}, 10.0)
    live.apply("a", {"in_stock": False}, 30.0)
    live.apply("b", {"hidden": True}, 15.0)
    live.prune(20.0)
    assert live.overrides == {"a": {"in_stock": (False, 30.0)}}
    live.prune(5.0)  # a cut-off never moves back
    assert live.cutoff == 20.0


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
