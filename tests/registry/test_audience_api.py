"""GET /v1/audiences over the audience job (real MLflow registry, real Valkey, the real app): the write role only,
pending until the job computed it, then the served model's audience; a larger size or a garbled status is computed
again; forgetting takes a user out of every stored audience, also when it lands while the job runs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.erasure import request_forget
from recommender.online.keys import Keys
from recommender.registry.audience import Target, audience, refresh_audiences
from recommender.registry.tracking import load_bundle
from serving.app import create_app

KEYS = Keys("recsys")
WRITE, READ = {"X-API-Key": "backend"}, {"X-API-Key": "shop"}


@pytest.fixture
def keyed(served_settings: Settings) -> Settings:
    return served_settings.model_copy(update={"api_keys": SecretStr("shop:read,backend:write,ops:admin")})


@pytest.fixture
def c(keyed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed)) as client:
        yield client


@pytest.fixture
def r(keyed: Settings) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(str(keyed.redis_url), decode_responses=True) as client:
        yield client


def popular_item(settings: Settings) -> str:
    bundle, _ = load_bundle(settings)
    return str(bundle.vocab.items[int(np.argmax(np.diff(bundle.user_items.tocsc().indptr)))])


def raw_of(pseudonyms: list[str]) -> dict[str, str]:
    """pseudonym -> the test shop's raw id (``u{n}``, secret ``test-secret``)."""
    wanted = set(pseudonyms)
    return {p: raw for n in range(5000) if (p := pseudonymize(raw := f"u{n}", "test-secret")) in wanted}


def test_only_the_write_role_and_one_clear_target(c: TestClient) -> None:
    assert c.get("/v1/audiences", params={"item": "i1"}).status_code == 401
    assert c.get("/v1/audiences", params={"item": "i1"}, headers=READ).status_code == 403
    both = c.get("/v1/audiences", params={"item": "i1", "category": "c01"}, headers=WRITE)
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    for bad in ({}, {"attribute": "brand"}, {"item": "i1", "top": 0}, {"item": "i1", "top": 10_001}):
        assert c.get("/v1/audiences", params=bad, headers=WRITE).status_code == 422, bad


def test_pending_then_the_served_models_audience_and_kept_current(c: TestClient, keyed: Settings) -> None:
    item = popular_item(keyed)
    first = c.get("/v1/audiences", params={"item": item, "top": 30}, headers=WRITE)
    assert first.status_code == 202 and first.json()["status"] == "pending" and first.headers["Retry-After"]
    done = refresh_audiences(keyed)
    assert done["computed"] == [f"item:{item}"] and done["failed"] == {}
    ready = c.get("/v1/audiences", params={"item": item, "top": 30}, headers=WRITE).json()
    expected = audience(keyed, Target(item=item), top=30)
    assert ready["status"] == "ready" and ready["model_version"] == expected.model_version == "1"
    assert {u["user_id"] for u in ready["users"]} == set(expected.users)
    assert [u["score"] for u in ready["users"]] == expected.scores  # best first
    fewer = c.get("/v1/audiences", params={"item": item, "top": 5}, headers=WRITE).json()
    assert [u["user_id"] for u in fewer["users"]] == [u["user_id"] for u in ready["users"]][:5]
    assert refresh_audiences(keyed)["computed"] == []  # nothing new to do: no model loaded
    bigger = c.get("/v1/audiences", params={"item": item, "top": 60}, headers=WRITE)
    assert bigger.status_code == 202
    assert refresh_audiences(keyed)["computed"] == [f"item:{item}"]
    assert len(c.get("/v1/audiences", params={"item": item, "top": 60}, headers=WRITE).json()["users"]) == 60


def test_an_unknown_item_fails_clearly_and_garbled_state_is_computed_again(
    c: TestClient, keyed: Settings, r: redis.Redis
) -> None:
    assert c.get("/v1/audiences", params={"item": "nope"}, headers=WRITE).status_code == 202
    assert "item:nope" in refresh_audiences(keyed)["failed"]
    missing = c.get("/v1/audiences", params={"item": "nope"}, headers=WRITE)
    assert missing.status_code == 404 and "no item of item:nope" in missing.json()["detail"]
    item, version = popular_item(keyed), str(r.get(KEYS.active))
    assert c.get("/v1/audiences", params={"item": item}, headers=WRITE).status_code == 202
    r.hset(KEYS.audiences(version), f"item:{item}", "{not json")
    r.hset(KEYS.audiences_wanted, "item:other", "[1, 2")
    assert c.get("/v1/audiences", params={"item": item}, headers=WRITE).status_code == 202
    done = refresh_audiences(keyed)
    assert done["computed"] == [f"item:{item}"] and done["dropped"] == ["item:other"]
    assert c.get("/v1/audiences", params={"item": item}, headers=WRITE).json()["status"] == "ready"
    assert KEYS.audience(version, "item:x").startswith(KEYS.ns(version))  # a version's cleanup removes them


def test_the_number_of_kept_audiences_is_capped(keyed: Settings) -> None:
    with TestClient(create_app(keyed.model_copy(update={"audience_max_targets": 2}))) as c:
        for item in ("a", "b"):
            assert c.get("/v1/audiences", params={"item": item}, headers=WRITE).status_code == 202
        assert c.get("/v1/audiences", params={"item": "a", "top": 200}, headers=WRITE).status_code == 202  # kept one
        refused = c.get("/v1/audiences", params={"category": "c01"}, headers=WRITE)
        assert refused.status_code == 409 and "RECSYS_AUDIENCE_MAX_TARGETS" in refused.json()["detail"]


def test_forgetting_takes_a_user_out_of_every_stored_audience(c: TestClient, keyed: Settings, r: redis.Redis) -> None:
    item = popular_item(keyed)

    def members() -> list[str]:
        answer = c.get("/v1/audiences", params={"item": item, "top": 200}, headers=WRITE).json()
        return [u["user_id"] for u in answer["users"]]

    members()
    refresh_audiences(keyed)
    users = members()
    pseudonym, raw = next(iter(raw_of(users).items()))
    assert c.delete(f"/v1/users/{raw}", headers={"X-API-Key": "ops"}).status_code == 202
    after = members()
    assert pseudonym not in after and len(after) == len(users) - 1
    version = str(r.get(KEYS.active))
    assert r.zscore(KEYS.audience(version, f"item:{item}"), pseudonym) is None


def test_a_user_forgotten_while_the_job_runs_is_not_in_what_it_stored(keyed: Settings, r: redis.Redis) -> None:
    item = popular_item(keyed)
    target = Target(item=item)
    best = audience(keyed, target, top=5).users[0]
    with TestClient(create_app(keyed)) as c:
        c.get("/v1/audiences", params={"item": item, "top": 5}, headers=WRITE)

    def forget_midway(stage: str, done: int, total: int | None) -> None:
        if done == 0:  # after the job read who is forgotten, before it stores the audience
            request_forget(r, KEYS, best)

    done = refresh_audiences(keyed, forget_midway)
    assert done["late_forgotten"] == 1
    stored = r.zrange(KEYS.audience(str(r.get(KEYS.active)), target.label), 0, -1)
    assert best not in stored and len(stored) == 4


def test_a_run_killed_before_its_check_serves_nothing_until_the_next_run_sweeps_it(
    keyed: Settings, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forget lands while the job computes, and forget_user completes it (tombstoned, the queue emptied)
    before the job dies: what the job stored still holds the user, so it must not be served, and the next
    run removes the user before serving it."""
    import recommender.registry.audience as module
    from recommender.data.store import Store

    item = popular_item(keyed)
    best = audience(keyed, Target(item=item), top=5).users[0]
    with TestClient(create_app(keyed)) as c:
        c.get("/v1/audiences", params={"item": item, "top": 5}, headers=WRITE)

        def forget_and_complete(stage: str, done: int, total: int | None) -> None:
            if done == 0:
                request_forget(r, KEYS, best)
                Store(keyed).add_tombstone(best)
                r.srem(KEYS.forget_pending, best)
                assert r.get(KEYS.lease(str(r.get(KEYS.active)))) == "audiences"  # cleanups leave it alone

        def killed(*args: object) -> int:
            raise SystemExit("killed before the check")

        monkeypatch.setattr(module, "forget_in_audiences", killed)
        with pytest.raises(SystemExit):
            refresh_audiences(keyed, forget_and_complete)
        version = str(r.get(KEYS.active))
        assert best in r.zrange(KEYS.audience(version, f"item:{item}"), 0, -1)  # stored, unchecked
        assert c.get("/v1/audiences", params={"item": item, "top": 5}, headers=WRITE).status_code == 202
        monkeypatch.undo()
        assert refresh_audiences(keyed)["swept"] == 1
        ready = c.get("/v1/audiences", params={"item": item, "top": 5}, headers=WRITE).json()
        assert ready["status"] == "ready" and best not in {u["user_id"] for u in ready["users"]}
        assert len(ready["users"]) == 4 and not r.exists(KEYS.lease(version))


def test_a_forget_is_queued_before_redis_is_cleared(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """So a job that writes a user's data and then reads the queue always sees a deletion that overlapped it."""
    from recommender.online import erasure

    seen: list[bool] = []
    real = erasure.forget_in_redis

    def spy(client: redis.Redis, keys: Keys, user: str) -> tuple[int, int]:
        seen.append(bool(client.sismember(keys.forget_pending, user)))
        return real(client, keys, user)

    monkeypatch.setattr(erasure, "forget_in_redis", spy)
    request_forget(r, KEYS, "z" * 32)
    assert seen == [True]
