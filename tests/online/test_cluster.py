"""Redis Cluster (RECSYS_REDIS_CLUSTER): the publish spreads over the nodes and still flips atomically,
and the API answers from the cluster, against a real three-node Valkey cluster started by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis.crc import key_slot

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys
from recommender.online.redis_conn import client
from recommender.registry.lifecycle import publish_model
from serving.app import create_app
from tests.conftest import SECRET
from tests.shops import Shop

KEYS = Keys()
ADMIN = {"X-API-Key": "ops"}


@pytest.fixture(scope="module")
def cluster_settings(redis_cluster: list[int], shops: dict[str, Shop]) -> Settings:
    """The small shop's production version published through the cluster client."""
    settings = (
        shops["api"]
        .restore()
        .model_copy(
            update={
                "redis_url": f"redis://127.0.0.1:{redis_cluster[0]}",
                "redis_cluster": True,
                "publish_batch": 100,
                "api_keys": SecretStr("shop:read,page:events,ops:admin"),
            }
        )
    )
    publish_model(settings)
    return settings


def test_settings_refuse_a_cluster_without_a_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RECSYS_REDIS_CLUSTER=true needs RECSYS_REDIS_URL"):
        Settings(home=tmp_path, redis_cluster=True)


def test_a_publish_spreads_over_the_nodes_and_flips_on_one_slot(
    cluster_settings: Settings, redis_cluster: list[int]
) -> None:
    r = client(cluster_settings, str(cluster_settings.redis_url))
    first = str(r.get(KEYS.active))
    users = int(r.hget(KEYS.meta(first), "users") or 0)
    per_node = [redis.Redis(port=port).dbsize() for port in redis_cluster]
    assert users > 0 and all(n > users // 10 for n in per_node)  # no node holds everything
    control = {key_slot(k.encode()) for k in (KEYS.active, KEYS.versions, KEYS.challenger, KEYS.started)}
    assert len(control) == 1  # the flip's MULTI/EXEC runs on one slot
    user = pseudonymize("u1", SECRET)
    assert key_slot(KEYS.user(first, user).encode()) == key_slot(KEYS.session(user).encode())

    sharded = publish_model(cluster_settings.model_copy(update={"publish_shards": 2}))

    assert sharded.previous == first and r.get(KEYS.active) == sharded.version
    assert r.lrange(KEYS.versions, 0, -1) == [sharded.version, first]
    keys = list(r.scan_iter(match=KEYS.ns(sharded.version) + "user:*", count=1000))
    assert len(keys) == users and all(r.mget(keys))  # read back across the slots
    third = publish_model(cluster_settings)
    assert third.removed == [first] and not list(r.scan_iter(match=KEYS.ns(first) + "*"))


def test_the_api_answers_from_the_cluster(cluster_settings: Settings) -> None:
    read = {"X-API-Key": "shop"}
    with TestClient(create_app(cluster_settings)) as api:
        assert api.get("/readyz").status_code == 200
        body = api.get("/v1/users/u1/recommendations", params={"n": 5}, headers=read).json()
        assert body["source"] == "personalized" and len(body["items"]) == 5
        filtered = api.get("/v1/users/u1/recommendations", params={"n": 8, "category": "c02"}, headers=read).json()
        assert len(filtered["items"]) == 8
        first = body["items"][0]["item_id"]
        assert api.get(f"/v1/items/{first}/similar", params={"n": 3}, headers=read).json()["items"]
        assert api.get("/v1/popular", params={"n": 3, "category": "c02"}, headers=read).json()["items"]
        event = {"user_id": "u1", "item_id": first, "event_type": "view", "timestamp": "2025-06-01T00:00:00Z"}
        assert api.post("/v1/events", json=event, headers={"X-API-Key": "page"}).status_code == 202
        after = api.get("/v1/users/u1/recommendations", params={"n": 5}, headers=read).json()
        assert after["source"] == "session"  # the list and the session read in one MGET on one node
        # the live catalog and the rules change in one transaction on the {recsys} slot
        assert api.patch(f"/v1/items/{first}", json={"in_stock": False}, headers=ADMIN).status_code == 200
        rules = {"rules": [{"kind": "pin", "item_id": "i0", "position": 1}]}
        assert api.put("/v1/rules/home", json=rules, headers=ADMIN).status_code == 200
        pinned = api.get("/v1/placements/home", params={"user_id": "u2", "n": 20}, headers=read).json()
        assert pinned["items"][0]["item_id"] == "i0" and first not in [i["item_id"] for i in pinned["items"]]
        assert api.put("/v1/rules/home", json={}, headers=ADMIN).status_code == 200
        assert api.delete("/v1/users/u1", headers=ADMIN).status_code == 202
        gone = api.get("/v1/users/u1/recommendations", params={"n": 5}, headers=read).json()
        assert gone["source"] == "popular"


def test_a_lost_node_means_fallback_answers_not_errors(cluster_settings: Settings, redis_cluster: list[int]) -> None:
    """Runs last: it shuts down one of the three primaries (a third of the slots)."""
    users = [f"u{i}" for i in range(2, 42)]
    read = {"X-API-Key": "shop"}
    with TestClient(create_app(cluster_settings.model_copy(update={"redis_retry_after": 0.2}))) as api:
        before = {api.get(f"/v1/users/{u}/recommendations", headers=read).json()["source"] for u in users}
        assert "fallback" not in before and "personalized" in before
        redis.Redis(port=redis_cluster[2]).shutdown(nosave=True)  # type: ignore[no-untyped-call]
        answers = [api.get(f"/v1/users/{u}/recommendations", params={"n": 5}, headers=read) for u in users]
    assert all(a.status_code == 200 and len(a.json()["items"]) == 5 for a in answers)
    sources = [a.json()["source"] for a in answers]
    assert "fallback" in sources and set(sources) <= {"personalized", "popular", "fallback"}
