"""Publishing is atomic for readers: a failed or killed publish leaves the old version served, complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.ingest import ingest_catalog
from recommender.online.keys import Keys
from recommender.registry.lifecycle import publish_model
from recommender.registry.publish import IncompletePublishError, begin, finish, publish, write_shard
from recommender.registry.tracking import load_bundle
from serving.app import create_app
from tests.conftest import REPO, write

KEYS = Keys("recsys")


@pytest.fixture
def served(served_settings: Settings) -> tuple[Settings, str, redis.Redis]:
    """A production model published once; returns (settings, its published version, client)."""
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    return served_settings, str(r.get(KEYS.active)), r


def assert_complete(r: redis.Redis, version: str, top_n: int) -> None:
    """Every user of ``version`` answers with a full list."""
    users = int(r.hget(KEYS.meta(version), "users") or 0)
    keys = list(r.scan_iter(match=KEYS.ns(version) + "user:*", count=1000))
    assert users > 0 and len(keys) == users
    assert all(len(json.loads(v)["items"]) == top_n for v in r.mget(keys))


def test_failure_midway_keeps_the_old_version_and_is_cleaned_up(
    served: tuple[Settings, str, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, old, r = served
    bundle, version = load_bundle(settings)
    real, calls = bundle.model.recommend, {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("scoring died")
        return real(*args, **kwargs)

    monkeypatch.setattr(bundle.model, "recommend", flaky)
    with pytest.raises(MemoryError):
        publish(r, settings, bundle, version)
    assert r.get(KEYS.active) == old
    assert_complete(r, old, settings.top_n)
    partial = set(r.smembers(KEYS.started)) - {old}
    assert len(partial) == 1 and list(r.scan_iter(match=KEYS.ns(partial.pop()) + "*"))
    monkeypatch.undo()
    again = publish_model(settings)
    assert again.removed and r.get(KEYS.active) == again.version
    assert set(r.smembers(KEYS.started)) == {old, again.version}


def test_killed_publish_leaves_the_old_version_served(served: tuple[Settings, str, redis.Redis]) -> None:
    settings, old, r = served
    env = {
        **os.environ,
        "RECSYS_HOME": str(settings.home),
        "RECSYS_REDIS_URL": str(settings.redis_url),
        "RECSYS_HMAC_SECRET": "test-secret",
        "RECSYS_PUBLISH_BATCH": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "recommender.cli", "publish", "--json"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    new: set[str] = set()
    while proc.poll() is None and time.monotonic() < deadline:
        new = set(r.smembers(KEYS.started)) - {old}
        if new and any(True for _ in r.scan_iter(match=KEYS.ns(next(iter(new))) + "user:*", count=100)):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the publish ended before it could be killed midway"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = next(iter(new))
    assert r.hget(KEYS.meta(partial), "complete") is None  # it really died half-way
    assert r.get(KEYS.active) == old
    assert_complete(r, old, settings.top_n)


def test_readers_never_see_a_half_written_version(served: tuple[Settings, str, redis.Redis]) -> None:
    settings, old, r = served
    users = [KEYS.user_of(k) for k in r.scan_iter(match=KEYS.ns(old) + "user:*", count=1000)][:50]
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def reader() -> None:
        client = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
        while not stop.is_set():
            version = client.get(KEYS.active)
            for user in users:
                value = client.get(KEYS.user(str(version), user))
                seen.append((str(version), len(json.loads(value)["items"]) if value else 0))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        new = publish_model(settings)
        time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    versions = {v for v, _ in seen}
    assert versions <= {old, new.version} and new.version in versions
    assert all(n == settings.top_n for _, n in seen)  # never an empty or partial list


def version_contents(r: redis.Redis, version: str) -> dict[str, object]:
    """Every key of ``version`` (named relative to it) with its value; meta without its per-publish fields."""
    out: dict[str, object] = {}
    for key in r.scan_iter(match=KEYS.ns(version) + "*", count=1000):
        name = key[len(KEYS.ns(version)) :]
        out[name] = r.hgetall(key) if r.type(key) == "hash" else r.get(key)
    meta = out.pop("meta")
    assert isinstance(meta, dict)
    out["meta"] = {
        k: v for k, v in meta.items() if k not in {"started_at", "published_at", "catalog_read_at", "shards"}
    }
    return out


def test_sharded_publish_writes_what_the_unsharded_one_does(served: tuple[Settings, str, redis.Redis]) -> None:
    settings, _, r = served
    bundle, model_version = load_bundle(settings)
    whole = publish(r, settings, bundle, model_version)
    shards = 3
    version = begin(r, settings.model_copy(update={"publish_shards": shards}), bundle, model_version)
    for shard in (2, 0, 1):  # parallel workers finish in any order
        write_shard(r, KEYS, version, bundle, settings, shard, shards)
    parts = finish(r, settings, version)
    assert r.get(KEYS.active) == parts.version and parts.users == whole.users
    expected, got = version_contents(r, whole.version), version_contents(r, parts.version)
    assert len(expected) > whole.users + whole.items  # user and similar lists, popular, catalog, meta
    assert got == expected


def test_a_version_with_a_missing_shard_is_never_flipped_to(served: tuple[Settings, str, redis.Redis]) -> None:
    settings, old, r = served
    bundle, model_version = load_bundle(settings)
    two = settings.model_copy(update={"publish_shards": 2})
    version = begin(r, two, bundle, model_version)
    write_shard(r, KEYS, version, bundle, two, 1, 2)
    with pytest.raises(IncompletePublishError, match=r"shard\(s\) \[0\] of 2"):
        finish(r, two, version)
    assert r.get(KEYS.active) == old and r.hget(KEYS.meta(version), "complete") is None
    with pytest.raises(ValueError, match=r"shard 2 is not in 0\.\.1"):
        write_shard(r, KEYS, version, bundle, two, 2, 2)
    write_shard(r, KEYS, version, bundle, two, 0, 2)  # the retried shard
    assert finish(r, two, version).previous == old and r.get(KEYS.active) == version
    assert_complete(r, version, settings.top_n)


def test_the_api_follows_the_catalog_of_the_version_it_serves(
    served: tuple[Settings, str, redis.Redis], tmp_path: Path
) -> None:
    settings = served[0].model_copy(update={"active_cache_seconds": 0})
    query = {"n": 5, "category": "c02", "details": True}
    with TestClient(create_app(settings)) as api:
        before = api.get("/v1/users/u1/recommendations", params=query).json()["items"]
        moved = before[0]["item_id"]
        assert api.get("/v1/users/u1/recommendations", params=query).json()["items"] == before  # from the cache
        catalog = write(tmp_path / "moved.csv", f"item_id,title,category,price,in_stock\n{moved},Moved,c99,1.5,true\n")
        ingest_catalog(catalog, settings)
        publish_model(settings)  # a new version carries the new catalog

        after = api.get("/v1/users/u1/recommendations", params=query).json()["items"]
        elsewhere = api.get("/v1/users/u1/recommendations", params=query | {"category": "c99", "n": 50}).json()

    assert moved not in [i["item_id"] for i in after] and len(after) == 5
    entry = {i["item_id"]: i for i in elsewhere["items"]}[moved]  # the only item of c99
    assert (entry["title"], entry["category"], entry["price"]) == ("Moved", "c99", 1.5)


def test_a_publish_in_progress_survives_another_publish_and_an_abandoned_one_does_not(
    served: tuple[Settings, str, redis.Redis],
) -> None:
    settings, _, r = served
    bundle, model_version = load_bundle(settings)
    two = settings.model_copy(update={"publish_shards": 2})
    slow = begin(r, two, bundle, model_version)  # e.g. retrain's shards still queued on the workers
    write_shard(r, KEYS, slow, bundle, two, 0, 2)

    other = publish_model(settings)  # e.g. a promote_model run meanwhile: its cleanup leaves `slow` alone

    assert slow not in other.removed and r.hget(KEYS.meta(slow), "shard:0/2")
    write_shard(r, KEYS, slow, bundle, two, 1, 2)
    assert finish(r, two, slow).previous == other.version and r.get(KEYS.active) == slow
    assert_complete(r, slow, settings.top_n)
    assert not r.exists(KEYS.lease(slow))

    abandoned = begin(r, two, bundle, model_version)
    r.delete(KEYS.lease(abandoned))  # as when its lease expires (RECSYS_PUBLISH_LEASE_SECONDS)
    assert abandoned in publish_model(settings).removed
    with pytest.raises(IncompletePublishError, match="not being published any more"):
        write_shard(r, KEYS, abandoned, bundle, two, 0, 2)
