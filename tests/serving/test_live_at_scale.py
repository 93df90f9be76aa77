"""The live state at a shop's size and age: a worker pays for what changed, not for what exists.

Before: every change made each worker re-read the whole ``catalog:live`` hash. With 400k fields the
read passed the Redis timeout and every answer came from the fallback, for good, which then showed
sold-out items again; an experiment made each worker reload its catalog sets at every switch of arm.
Redis's own command counters (``INFO commandstats``) tell what a worker asked for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.experiments import in_challenger
from recommender.online.keys import Keys, decode
from recommender.online.redis_conn import start_valkey
from recommender.registry.lifecycle import publish_model
from serving.app import create_app
from tests.conftest import SECRET
from tests.shops import Shop

KEYS = Keys()
READ, WRITE = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}
FIELDS = 400_000


def calls(r: redis.Redis) -> dict[str, int]:
    """Calls per command so far (Redis's ``commandstats``)."""
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def more(r: redis.Redis, before: dict[str, int], *commands: str) -> int:
    after = calls(r)
    return sum(after.get(c, 0) - before.get(c, 0) for c in commands)


def price_changes(r: redis.Redis, count: int, at: float) -> None:
    """``count`` live price changes (made at ``at``) of items the shop does not list."""
    pipe = r.pipeline(transaction=False)
    value = orjson.dumps([9.99, at]).decode()
    for lo in range(0, count, 10_000):
        pipe.hset(KEYS.catalog_live, mapping={f"price:other-{k}": value for k in range(lo, min(count, lo + 10_000))})
    pipe.execute()


def refreshed(client: TestClient, version: str) -> None:
    """Wait for the worker's first upkeep round (its fallback copy of ``version``) to be over."""
    deadline = time.monotonic() + 20
    while client.app.state.service.fallback.version != version and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def big(shops: dict[str, Shop], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The API shop published on a Valkey of its own (a test stops it), then 400k live fields in the hash."""
    source = shops["api"].restore()
    server = start_valkey(data_dir=tmp_path_factory.mktemp("big-valkey"))
    settings = source.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{server.port}/0",
            "api_keys": SecretStr("shop:read,backend:write"),
            "redis_retry_after": 0.2,
        }
    )
    publish_model(settings)
    price_changes(redis.Redis.from_url(str(settings.redis_url), decode_responses=True), FIELDS, time.time())
    try:
        yield settings
    finally:
        if server.is_running():
            server.stop()


def test_a_change_costs_each_worker_what_changed_and_answers_never_fall_back(big: Settings) -> None:
    r = redis.Redis.from_url(str(big.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    with TestClient(create_app(big)) as a, TestClient(create_app(big)) as b:
        refreshed(a, version)
        refreshed(b, version)
        first = b.get("/v1/users/u1/recommendations", params={"n": 10}, headers=READ).json()
        assert first["source"] == "personalized"
        before = calls(r)
        for k, item in enumerate([i["item_id"] for i in first["items"][:5]]):
            change = {"in_stock": False, "price": float(k)}
            assert a.patch(f"/v1/items/{item}", json=change, headers=WRITE).status_code == 200
            time.sleep(big.live_poll_seconds)  # the next request is due to poll
            answer = b.get("/v1/users/u1/recommendations", params={"n": 10}, headers=READ).json()
            assert answer["source"] == "personalized" and item not in [i["item_id"] for i in answer["items"]]
        assert more(r, before, "hgetall", "hscan", "smembers", "sscan") == 0  # nothing re-read whole
        assert r.hlen(KEYS.catalog_live) >= FIELDS


def test_an_experiment_costs_no_reloads(big: Settings) -> None:
    r = redis.Redis.from_url(str(big.redis_url), decode_responses=True)
    published = publish_model(big, alias=None, version="1", challenger=True)
    share = big.model_copy(update={"experiment_share": 0.5})
    versions = (str(r.get(KEYS.active)), published.version)
    users = [
        u
        for u in (f"u{k}" for k in range(80))
        if all(r.exists(KEYS.user(v, pseudonymize(u, SECRET))) for v in versions)
    ]
    champion = [u for u in users if not in_challenger(pseudonymize(u, SECRET), 0.5)][:10]
    challenger = [u for u in users if in_challenger(pseudonymize(u, SECRET), 0.5)][:10]
    assert champion and challenger
    with TestClient(create_app(share)) as c:
        refreshed(c, str(r.get(KEYS.active)))
        for u in champion[:1] + challenger[:1]:  # each arm's version loaded once
            c.get(f"/v1/users/{u}/recommendations", headers=READ)
        before = calls(r)
        for one, other in zip(champion, challenger, strict=False):  # twenty requests alternating arms
            for user in (one, other):
                assert c.get(f"/v1/users/{user}/recommendations", headers=READ).json()["source"] == "personalized"
        assert more(r, before, "smembers", "sscan", "hgetall", "hscan", "hmget") == 0
    r.delete(KEYS.challenger, KEYS.experiment)


def test_the_fallback_keeps_out_what_the_worker_last_knew_was_sold_out(big: Settings, tmp_path: Path) -> None:
    r = redis.Redis.from_url(str(big.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    popular = decode(r.get(KEYS.popular(version)))[0]
    with TestClient(create_app(big)) as c:
        refreshed(c, version)
        sold_out = popular[:3]
        for item in sold_out:
            assert c.patch(f"/v1/items/{item}", json={"in_stock": False}, headers=WRITE).status_code == 200
        r.shutdown(nosave=True)  # type: ignore[no-untyped-call]
        answers = [c.get(f"/v1/users/u{k}/recommendations", params={"n": 20}, headers=READ).json() for k in range(20)]
    assert {a["source"] for a in answers} == {"fallback"}
    assert not any(set(sold_out) & {i["item_id"] for i in a["items"]} for a in answers)
    assert all(len(a["items"]) == 20 for a in answers)
