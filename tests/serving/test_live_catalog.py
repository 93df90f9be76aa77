"""The live catalog end to end: an item made unavailable leaves every answer at once, comes back when
restocked, and the drain stores the change so the next publish and training keep it."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.online.keys import Keys
from recommender.ops.stream import drain_catalog
from recommender.registry.lifecycle import publish_model
from serving.app import create_app
from tests.conftest import SECRET

KEYS = Keys("recsys")
READ, WRITE = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}


@pytest.fixture
def workers(keyed: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API workers on the same Redis."""
    with TestClient(create_app(keyed)) as a, TestClient(create_app(keyed)) as b:
        yield a, b


def stored(settings: Settings, key: str) -> list[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    return list(orjson.loads(r.get(key) or b'{"items": []}')["items"])


def served(c: TestClient, url: str, **params: object) -> list[str]:
    response = c.get(url, params=params, headers=READ)
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def everywhere(c: TestClient, item: str, similar_to: str) -> dict[str, bool]:
    """Whether ``item`` is in each kind of answer."""
    return {
        "user": item in served(c, "/v1/users/u1/recommendations", n=20),
        "home": item in served(c, "/v1/placements/home", user_id="u1", n=20),
        "similar": item in served(c, f"/v1/items/{similar_to}/similar", n=20),
        "product": item in served(c, "/v1/placements/product", item_id=similar_to, n=20),
        "popular": item in served(c, "/v1/popular", n=100),
    }


def test_an_unavailable_item_leaves_every_answer_at_once_and_comes_back(
    workers: tuple[TestClient, TestClient], keyed: Settings
) -> None:
    a, b = workers
    r = redis.Redis.from_url(str(keyed.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    before = served(b, "/v1/users/u1/recommendations", n=10)
    item = before[0]
    neighbour = next(
        i for i in stored(keyed, KEYS.popular(version)) if item in stored(keyed, KEYS.similar(version, i))[:20]
    )
    assert all(everywhere(b, item, neighbour).values())

    assert a.patch(f"/v1/items/{item}", json={"in_stock": False}, headers=WRITE).json() == {"changed": 1}
    assert not any(everywhere(b, item, neighbour).values())  # the other worker, the very next request
    after = served(b, "/v1/users/u1/recommendations", n=10)
    assert after == [i for i in before if i != item] + after[9:] and len(after) == 10  # the next one fills

    assert a.patch(f"/v1/items/{item}", json={"in_stock": True}, headers=WRITE).status_code == 200
    assert served(b, "/v1/users/u1/recommendations", n=10) == before
    assert a.post("/v1/items:batch", json=[{"item_id": item, "hidden": True}], headers=WRITE).json()["changed"] == 1
    assert not any(everywhere(b, item, neighbour).values())
    a.post("/v1/items:batch", json=[{"item_id": item, "hidden": False}], headers=WRITE)
    assert all(everywhere(b, item, neighbour).values())


def test_live_fields_show_in_details_and_rules(workers: tuple[TestClient, TestClient]) -> None:
    a, b = workers
    item = served(b, "/v1/users/u2/recommendations", n=3)[1]
    batch = [{"item_id": item, "price": 1.25, "title": "Sale"}, {"item_id": item, "category": "clearance"}]
    assert a.post("/v1/items:batch", json=batch, headers=WRITE).json() == {"changed": 1}
    shown = b.get("/v1/users/u2/recommendations", params={"n": 3, "details": True}, headers=READ).json()["items"]
    assert {k: shown[1][k] for k in ("item_id", "price", "title", "category")} == {
        "item_id": item, "price": 1.25, "title": "Sale", "category": "clearance"
    }  # fmt: skip
    only = served(b, "/v1/users/u2/recommendations", n=5, category="clearance")
    assert only == [item]


def test_catalog_writes_need_the_write_role_and_a_valid_body(workers: tuple[TestClient, TestClient]) -> None:
    a, _ = workers
    assert a.patch("/v1/items/i1", json={"in_stock": False}).status_code == 401
    assert a.patch("/v1/items/i1", json={"in_stock": False}, headers=READ).status_code == 403
    for body in ({}, {"in_stock": "maybe"}, {"price": -1}, {"colour": "red"}, {"price": "NaN"}, [1]):
        assert a.patch("/v1/items/i1", json=body, headers=WRITE).status_code == 422, body
    assert a.post("/v1/items:batch", json=[], headers=WRITE).status_code == 422
    too_many = [{"item_id": f"i{k}", "hidden": False} for k in range(1001)]
    assert a.post("/v1/items:batch", json=too_many, headers=WRITE).status_code == 422
    assert a.post("/v1/items:batch", json=[{"hidden": True}], headers=WRITE).status_code == 422  # no item_id


def test_redis_gone_is_a_503_not_a_lost_change(keyed: Settings) -> None:
    down = keyed.model_copy(update={"redis_url": "redis://127.0.0.1:1/0", "redis_retry_after": 0.0})
    with TestClient(create_app(down)) as c:
        response = c.patch("/v1/items/i1", json={"in_stock": False}, headers=WRITE)
    assert response.status_code == 503 and "retry" in response.json()["detail"]


def test_the_drain_stores_changes_and_the_next_publish_keeps_them(keyed: Settings) -> None:
    r = redis.Redis.from_url(str(keyed.redis_url), decode_responses=True)
    with TestClient(create_app(keyed)) as c:
        c.post(
            "/v1/items:batch",
            json=[{"item_id": "i7", "in_stock": False, "price": 3.5}, {"item_id": "brand-new", "hidden": True}],
            headers=WRITE,
        )
    length = r.xlen(KEYS.catalog_changes)
    assert length >= 2
    assert drain_catalog(keyed, r) == length  # stored; kept in the stream for the workers' retention
    newest = r.xrevrange(KEYS.catalog_changes, count=1)[0][0]
    assert r.get(KEYS.catalog_changes_stored) == newest and r.xlen(KEYS.catalog_changes) == length
    rows = {row["item_id"]: row for row in Store(keyed).read_items().to_pylist()}
    assert rows["i7"]["in_stock"] is False and rows["i7"]["price"] == 3.5 and rows["brand-new"]["hidden"] is True
    assert rows["i7"]["title"] == "Product 7"  # what the change did not name stays
    assert drain_catalog(keyed, r) == 0  # nothing new
    past_retention = keyed.model_copy(update={"live_changes_retention_seconds": 0.0})
    assert drain_catalog(past_retention, r) == 0 and r.xlen(KEYS.catalog_changes) == 0  # stored and old: trimmed

    version = publish_model(keyed).version
    assert r.sismember(KEYS.out_of_stock(version), "i7") and r.sismember(KEYS.hidden(version), "brand-new")
    with TestClient(create_app(keyed)) as fresh:  # a new worker on the new version
        user = pseudonymize("u1", SECRET)
        candidates = stored(keyed, KEYS.user(version, user))
        shown = served(fresh, "/v1/users/u1/recommendations", n=100)
        assert "i7" not in shown and len(shown) == min(100, len(set(candidates) | set(shown)))
        fresh.patch("/v1/items/i7", json={"in_stock": True}, headers=WRITE)
        assert "i7" in served(fresh, "/v1/popular", n=150)
