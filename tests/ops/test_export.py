"""Bulk export (real Valkey, real Iceberg): every user's list as the API serves it, to the table or to files,
once per model version, replaced and never doubled on a retry, nothing half-written after a crash, and never a
forgotten user's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.online.feeds import PlacementQueryError
from recommender.online.keys import Keys
from recommender.ops import export as export_module
from recommender.ops.export import ExportError, export_recommendations
from serving.app import create_app

KEYS = Keys("recsys")


def table_rows(settings: Settings) -> pa.Table:
    return (
        Store(settings).recommendations().scan().to_arrow().sort_by([("user_id", "ascending"), ("rank", "ascending")])
    )


def users_with_lists(settings: Settings) -> set[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    return {KEYS.user_of(k) for k in r.scan_iter(match=KEYS.ns(version) + "user:*", count=1000)}


def test_every_user_gets_the_list_the_api_serves_under_the_rules_and_availability(served_settings: Settings) -> None:
    settings = served_settings.model_copy(update={"api_keys": SecretStr("shop:read,backend:write")})
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    user = pseudonymize("u1", settings.hmac_secret.get_secret_value())
    first = orjson.loads(r.get(KEYS.user(str(r.get(KEYS.active)), user)))["items"][0]
    with TestClient(create_app(settings)) as c:  # sold out now: neither the API nor the export shows it
        sold_out = c.patch(f"/v1/items/{first}", json={"in_stock": False}, headers={"X-API-Key": "backend"})
        assert sold_out.status_code == 200
    out = export_recommendations(settings, n=10)
    rows = table_rows(settings)
    assert out["users"] == len(users_with_lists(settings)) == len(set(rows.column("user_id").to_pylist()))
    assert out["rows"] == rows.num_rows and out["skipped"] is None and out["model_version"] == "1"
    assert set(rows.column("version").to_pylist()) == {"1"} and set(rows.column("placement").to_pylist()) == {"home"}
    assert first not in rows.column("item_id").to_pylist()
    mine = rows.filter(pa.compute.equal(rows.column("user_id"), user))
    assert mine.column("rank").to_pylist() == list(range(1, 11))
    with TestClient(create_app(settings)) as c:
        served = c.get("/v1/placements/home", params={"user_id": "u1", "n": 10}, headers={"X-API-Key": "shop"})
    assert mine.column("item_id").to_pylist() == [i["item_id"] for i in served.json()["items"]]
    assert [orjson.loads(x) for x in mine.column("reason").to_pylist()] == [i["reason"] for i in served.json()["items"]]


def test_an_export_is_done_once_per_version_and_a_forced_one_replaces_it(served_settings: Settings) -> None:
    first = export_recommendations(served_settings, n=5)
    again = export_recommendations(served_settings, n=5)
    assert again["skipped"] and again["rows"] == 0 and table_rows(served_settings).num_rows == first["rows"]
    Store(served_settings).delete_user(pseudonymize("nobody", "x"))  # a forget expires every older snapshot
    assert export_recommendations(served_settings, n=5)["skipped"]  # the table still knows what it holds
    forced = export_recommendations(served_settings, n=5, force=True)
    assert forced["rows"] == first["rows"] == table_rows(served_settings).num_rows  # replaced, not doubled
    bigger = export_recommendations(served_settings, n=6)  # another size is another export, replacing the first
    assert not bigger["skipped"] and table_rows(served_settings).num_rows == bigger["rows"] > first["rows"]
    assert export_recommendations(served_settings, "new", n=3)["rows"] > 0  # another placement is its own export
    placements = table_rows(served_settings).column("placement").to_pylist()
    assert placements.count("home") == bigger["rows"] and placements.count("new") > 0


@pytest.mark.parametrize("to", ["table", "csv"])
def test_a_user_forgotten_while_the_export_runs_is_dropped_before_it_commits(
    served_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, to: str
) -> None:
    monkeypatch.setattr(export_module, "USERS_PER_ROUND", 50)
    monkeypatch.setattr(export_module, "FILE_ROWS", 100)  # the user's rows are in a staged file already
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    victim = sorted(users_with_lists(served_settings))[0]

    def forget_midway(stage: str, done: int, total: int | None) -> None:
        if done >= 200:
            r.sadd(KEYS.forget_pending, victim)  # DELETE /v1/users/{id} queues the user

    if to == "table":
        out = export_recommendations(served_settings, n=5, progress=forget_midway)
        rows = table_rows(served_settings)
    else:
        out = export_recommendations(served_settings, n=5, to=str(tmp_path), fmt="csv", progress=forget_midway)
        rows = ds.dataset(out["target"], format="csv", exclude_invalid_files=True).to_table()
    exported = set(rows.column("user_id").to_pylist())
    assert victim not in exported and out["users"] == len(exported) == len(users_with_lists(served_settings)) - 1
    assert out["rows"] == rows.num_rows


def test_a_key_the_scan_returns_twice_is_exported_once(
    served_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = AsyncRedis.scan_iter

    async def twice(self: AsyncRedis, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # as while Redis rehashes
        async for key in scan(self, *args, **kwargs):
            yield key
            yield key

    monkeypatch.setattr(AsyncRedis, "scan_iter", twice)
    out = export_recommendations(served_settings, n=5)
    rows = table_rows(served_settings)
    assert out["users"] == len(users_with_lists(served_settings)) and rows.num_rows == out["rows"] == 5 * out["users"]
    pairs = list(zip(rows.column("user_id").to_pylist(), rows.column("rank").to_pylist(), strict=True))
    assert len(set(pairs)) == len(pairs)


def test_a_version_removed_while_it_is_exported_fails_the_export_and_commits_nothing(
    served_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "USERS_PER_ROUND", 50)
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))

    def publish_twice(stage: str, done: int, total: int | None) -> None:
        if done >= 100:
            r.delete(KEYS.meta(version))  # what the cleanup after two more publishes removes

    with pytest.raises(ExportError, match="removed while it was exported"):
        export_recommendations(served_settings, n=5, progress=publish_twice)
    assert table_rows(served_settings).num_rows == 0


def test_a_crash_midway_leaves_the_table_as_it_was_and_a_retry_completes(
    served_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "USERS_PER_ROUND", 50)
    monkeypatch.setattr(export_module, "FILE_ROWS", 100)  # files staged before the crash
    table = Store(served_settings).recommendations()
    before = len(table.snapshots())

    def crash(stage: str, done: int, total: int | None) -> None:
        if done >= 150:
            raise RuntimeError("the worker stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        export_recommendations(served_settings, n=5, progress=crash)
    assert (
        len(Store(served_settings).recommendations().snapshots()) == before
        and table_rows(served_settings).num_rows == 0
    )
    staged = list((Path(table.location().removeprefix("file://")) / "data").glob("*.parquet"))
    assert staged == []  # the staged files went with the crash
    done = export_recommendations(served_settings, n=5)
    assert (
        done["users"] == len(users_with_lists(served_settings)) and table_rows(served_settings).num_rows == done["rows"]
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_files_hold_the_same_rows_and_an_unfinished_export_is_redone(
    served_settings: Settings, tmp_path: Path, fmt: str
) -> None:
    folder = tmp_path / "version=1" / "placement=home"
    folder.mkdir(parents=True)
    (folder / f"part-00099.{fmt}").write_text("left by an export that crashed")  # no _SUCCESS
    out = export_recommendations(served_settings, n=4, to=str(tmp_path), fmt=fmt)  # type: ignore[arg-type]
    assert out["target"] == f"{tmp_path}/version=1/placement=home"
    assert not (folder / f"part-00099.{fmt}").exists() and orjson.loads((folder / "_SUCCESS").read_bytes())["rows"]
    rows = ds.dataset(str(folder), format=fmt, exclude_invalid_files=True).to_table()
    assert rows.num_rows == out["rows"] == 4 * out["users"]
    assert export_recommendations(served_settings, n=4, to=str(tmp_path), fmt=fmt)["skipped"]  # type: ignore[arg-type]


def test_forgotten_users_are_never_exported_and_forgetting_removes_the_exported(served_settings: Settings) -> None:
    store = Store(served_settings)
    gone, later = sorted(users_with_lists(served_settings))[:2]
    store.add_tombstone(gone)  # tombstoned, its lists not yet dropped from Redis: still not exported
    export_recommendations(served_settings, n=5)
    exported = set(table_rows(served_settings).column("user_id").to_pylist())
    assert gone not in exported and later in exported
    removed = store.delete_user(later)
    assert removed["recommendations_rows"] == 5
    assert later not in set(table_rows(served_settings).column("user_id").to_pylist())


def test_an_item_placement_or_nothing_published_is_a_clear_error(served_settings: Settings) -> None:
    with pytest.raises(PlacementQueryError, match="ranks for an item"):
        export_recommendations(served_settings, "product")
    redis.Redis.from_url(str(served_settings.redis_url)).delete(KEYS.active)
    with pytest.raises(ExportError, match="nothing is published"):
        export_recommendations(served_settings)
