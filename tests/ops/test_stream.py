"""Draining the API's event stream into Iceberg: acknowledged only after the commit, never stored twice."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.ingest import Ingest, IngestSummary
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.online.keys import Keys
from recommender.ops.stream import GROUP, drain_stream
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


def test_only_acknowledged_entries_are_trimmed(redis_settings: Settings) -> None:
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    post(redis_settings, [EVENT | {"item_id": f"i{k}"} for k in range(30)])
    first = drain_stream(redis_settings, r, limit=20)  # the rest stays for the next drain
    assert first.stored == 20 and r.xlen(Keys().events) == 10
    post(redis_settings, [EVENT | {"item_id": f"j{k}"} for k in range(5)])
    second = drain_stream(redis_settings, r)
    assert second.stored == 15 and r.xlen(Keys().events) == 0
    assert Store(redis_settings).read_events().num_rows == 35


def test_a_full_backlog_refuses_events_instead_of_dropping_any(redis_settings: Settings) -> None:
    limited = redis_settings.model_copy(update={"event_backlog_limit": 1000, "event_backlog_reserve": 0.0})
    r = redis.Redis.from_url(str(limited.redis_url), decode_responses=True)

    def batch(n: int, tag: str) -> list[dict[str, object]]:
        return [EVENT | {"item_id": f"{tag}{k}"} for k in range(n)]

    with TestClient(create_app(limited)) as client:
        assert [client.post("/v1/events", json=batch(500, tag)).status_code for tag in "ab"] == [202, 202]
        refused = client.post("/v1/events", json=batch(1, "c"))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "60"
        assert "RECSYS_EVENT_BACKLOG_LIMIT" in refused.json()["detail"]
        assert "recsys_event_backlog 1000.0" in client.get("/metrics").text
        drained = drain_stream(limited, r)
        assert drained.stored == 1000 and r.xlen(Keys().events) == 0
        time.sleep(1.1)  # the route re-reads the backlog once a second
        assert client.post("/v1/events", json=batch(1, "c")).status_code == 202
    assert Store(limited).read_events().num_rows == 1000 and r.xlen(Keys().events) == 1  # waits, not lost


def test_two_drains_at_once_store_every_event_once(redis_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    r = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
    post(redis_settings, [EVENT | {"item_id": f"i{k}"} for k in range(50)])
    both_staged = threading.Barrier(2, timeout=60)
    real_commit = Ingest.commit

    def commit_together(self: Ingest) -> IngestSummary:
        both_staged.wait()  # neither commits before the other has read and staged the same entries
        return real_commit(self)

    monkeypatch.setattr(Ingest, "commit", commit_together)
    results: list[IngestSummary] = []

    def drain() -> None:
        conn = redis.Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
        results.append(drain_stream(redis_settings, conn))  # the DAG's drain and `recsys drain`, one consumer

    first = threading.Thread(target=drain)
    first.start()
    while both_staged.n_waiting < 1:
        time.sleep(0.01)
    second = threading.Thread(target=drain)  # starts once the first has read everything: it rereads the pending
    second.start()
    first.join(60)
    second.join(60)
    assert sorted(s.read for s in results) == [50, 50]
    assert sorted(s.stored for s in results) == [0, 50] and sum(s.duplicates for s in results) == 50
    assert all(s.reconciles for s in results)
    assert Store(redis_settings).read_events().num_rows == 50
    assert r.xpending(Keys().events, GROUP)["pending"] == 0 and r.xlen(Keys().events) == 0


def test_the_backlog_keeps_room_for_the_shops_backend_while_a_public_key_floods(redis_settings: Settings) -> None:
    """The defect: 1,000 posts of 1,000 events from the page's key filled the backlog, and the backend's
    events got 503 too until the next drain."""
    limited = redis_settings.model_copy(
        update={
            "event_backlog_limit": 1000,
            "event_backlog_reserve": 0.2,
            "api_keys": SecretStr("page:events,backend:write"),
        }
    )
    flood = [EVENT | {"item_id": f"f{k}"} for k in range(100)]
    with TestClient(create_app(limited)) as client:
        answers = [client.post("/v1/events", json=flood, headers={"X-API-Key": "page"}).status_code for _ in range(10)]
        assert answers == [202] * 8 + [503] * 2  # the public key stops at 80%
        backend = [EVENT | {"item_id": f"b{k}"} for k in range(100)]
        posted = [client.post("/v1/events", json=backend, headers={"X-API-Key": "backend"}) for _ in range(3)]
        assert [p.status_code for p in posted] == [202, 202, 503]  # the write role may use the reserve, no more
    assert redis.Redis.from_url(str(limited.redis_url)).xlen(Keys().events) == 1000
