"""Draining the API's event stream into Iceberg: acknowledged only after the commit, never stored twice."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.keys import Keys
from recommender.privacy import pseudonymize
from recommender.store import Store
from recommender.stream import GROUP, drain_stream
from serving.app import create_app

EVENT = {"user_id": "alice", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}


def post(settings: Settings, events: list[dict[str, object]]) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/events", json=events).status_code == 202


def test_posted_events_reach_the_table_once(redis_settings: Settings) -> None:
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    post(redis_settings, [EVENT, EVENT | {"item_id": "i2", "event_type": "purchase", "quantity": 2, "price": 9.5}])
    first = drain_stream(redis_settings, r)
    assert (first.read, first.stored, first.duplicates, first.quarantined) == (2, 2, 0, 0) and first.reconciles
    rows = Store(redis_settings).read_events().to_pylist()
    assert {row["user_id"] for row in rows} == {pseudonymize("alice", "test-secret")}
    assert {(row["item_id"], row["quantity"], row["price"]) for row in rows} == {("i1", None, None), ("i2", 2, 9.5)}
    assert r.xpending(Keys().events, GROUP)["pending"] == 0
    again = drain_stream(redis_settings, r)
    assert again.read == 0 and again.snapshot_id == first.snapshot_id  # nothing new, no new snapshot


def test_a_drain_that_dies_before_acking_is_healed_without_duplicates(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    post(redis_settings, [EVENT, EVENT | {"item_id": "i3"}])

    def die(*args: object, **kwargs: object) -> None:
        raise ConnectionError("worker lost before XACK")

    monkeypatch.setattr(r, "xack", die)
    with pytest.raises(ConnectionError):
        drain_stream(redis_settings, r)  # committed to Iceberg, not acknowledged
    monkeypatch.undo()
    assert r.xpending(Keys().events, GROUP)["pending"] == 2
    retry = drain_stream(redis_settings, r)  # a retried task reads its pending entries first
    assert (retry.read, retry.stored, retry.duplicates) == (2, 0, 2)
    assert Store(redis_settings).read_events().num_rows == 2
    assert r.xpending(Keys().events, GROUP)["pending"] == 0
