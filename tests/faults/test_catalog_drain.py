"""Live catalog changes at the edges: a drain dying before or after its commit loses nothing and stores
each change once; many writers on one item leave one consistent value and every change in the stream."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio

from recommender.config import Settings
from recommender.data.store import Store
from recommender.online.keys import Keys
from recommender.online.live import change_items, parse_live
from recommender.ops.stream import drain_catalog

KEYS = Keys()


def changes(settings: Settings, batch: dict[str, dict[str, object]]) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(str(settings.redis_url), decode_responses=True)
        try:
            await change_items(client, KEYS, batch)
        finally:
            await client.aclose()

    asyncio.run(run())


def stored_rows(settings: Settings) -> list[dict[str, object]]:
    rows = Store(settings).read_items().to_pylist()
    return sorted(({k: v for k, v in r.items() if k != "updated_at"} for r in rows), key=lambda r: str(r["item_id"]))


def test_a_drain_dying_before_or_after_its_commit_loses_nothing_and_stores_once(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = redis_settings.model_copy(update={"live_changes_retention_seconds": 0.0})  # trim what is stored
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    changes(settings, {f"i{k}": {"in_stock": False, "price": float(k)} for k in range(50)})
    changes(settings, {"i3": {"hidden": True}})

    with monkeypatch.context() as m:  # the process dies inside the commit: nothing stored, nothing trimmed
        m.setattr(Store, "upsert_items", lambda self, items: (_ for _ in ()).throw(MemoryError("killed")))
        with pytest.raises(MemoryError):
            drain_catalog(settings, r)
    assert r.xlen(KEYS.catalog_changes) == 51 and Store(settings).read_items().num_rows == 0
    assert r.get(KEYS.catalog_changes_stored) is None

    with monkeypatch.context() as m:  # it dies after the commit, before recording its position
        m.setattr(redis.Redis, "set", lambda *a, **k: (_ for _ in ()).throw(MemoryError("killed")))
        with pytest.raises(MemoryError):
            drain_catalog(settings, r)
    first = stored_rows(settings)
    assert len(first) == 50 and r.xlen(KEYS.catalog_changes) == 51 and r.get(KEYS.catalog_changes_stored) is None

    with monkeypatch.context() as m:  # the rerun stores the same again, records, and dies before trimming
        m.setattr(redis.Redis, "xtrim", lambda *a, **k: (_ for _ in ()).throw(MemoryError("killed")))
        with pytest.raises(MemoryError):
            drain_catalog(settings, r)
    assert stored_rows(settings) == first  # applied twice: the same rows, nothing doubled
    assert r.xlen(KEYS.catalog_changes) == 51 and r.get(KEYS.catalog_changes_stored) is not None
    assert drain_catalog(settings, r) == 0 and r.xlen(KEYS.catalog_changes) == 0  # nothing new; trimmed now
    three = next(row for row in first if row["item_id"] == "i3")
    assert three["hidden"] is True and three["in_stock"] is False and three["price"] == 3.0

    changes(settings, {"i4": {"price": 99.0}})  # a later change, after everything was trimmed
    assert drain_catalog(settings, r) == 1
    assert next(row for row in stored_rows(settings) if row["item_id"] == "i4")["price"] == 99.0


def test_many_writers_on_one_item_leave_one_value_and_every_change(redis_settings: Settings) -> None:
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: changes(redis_settings, {"hot": {"price": float(k)}}), range(40)))
    live = parse_live(r.hgetall(KEYS.catalog_live))
    price, _ = live["hot"]["price"]
    entries = r.xrange(KEYS.catalog_changes)
    assert len(entries) == 40  # every change, each in its transaction
    assert price in {float(k) for k in range(40)}
    drain_catalog(redis_settings, r)
    [row] = Store(redis_settings).read_items().to_pylist()
    assert row["item_id"] == "hot" and row["price"] == price  # the stored value is the one the API serves
    assert row["updated_at"] <= datetime.now(UTC)
