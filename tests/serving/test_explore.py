"""Exploration through the API (real Valkey): a placement's share of slots goes to new items, under the rules and
availability, pins kept; what was shown and clicked is counted and read back, and Thompson sampling turns away
from an item shown often and never clicked."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.online.explore import CLICK_WINDOW_SECONDS, Exploration, placed, slots
from recommender.online.keys import Keys
from recommender.registry.newitems import published_index
from serving.app import create_app

KEYS = Keys("recsys")
READ, WRITE, ADMIN = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}, {"X-API-Key": "ops"}


@pytest.fixture(scope="module")
def exploring(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("explore") / "placements.json"
    path.write_text(
        json.dumps(
            {
                "placements": {
                    "home": {"feed": "user", "explore": 0.2},
                    "one": {"feed": "user", "explore": 0.1},
                    "plain": {"feed": "user"},
                }
            }
        )
    )
    return api_settings.model_copy(
        update={
            "api_keys": SecretStr("shop:events,backend:write,ops:admin"),  # shop: the browser key
            "live_poll_seconds": 0.0,
            "placements_file": path,
        }
    )


@pytest.fixture
def c(exploring: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(exploring)) as client:
        client.app.state.service.rng = np.random.default_rng(7)  # type: ignore[attr-defined]
        yield client


def home(c: TestClient, name: str = "home", **params: object) -> dict:  # type: ignore[type-arg]
    response = c.get(f"/v1/placements/{name}", params={"user_id": "u1", "n": 10, **params}, headers=READ)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def new_items(settings: Settings) -> set[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    index = published_index(r, KEYS, str(r.get(KEYS.active)))
    return {index.ids[k] for k in np.flatnonzero(index.new)}


def test_slots_are_the_last_of_every_block_and_pins_keep_theirs() -> None:
    assert slots(10, 0.1) == [9] and slots(10, 0.2) == [4, 9] and slots(8, 0.25) == [3, 7] and slots(10, 0) == []
    assert placed(list("abcdef"), ["X"], [1], lambda i: False) == list("aXbcdef")
    assert placed(list("abcdef"), ["X", "Y"], [1, 9], lambda i: i == "b") == list("abXcdefY")  # b pinned at 2


def test_a_worker_reads_back_only_the_versions_it_explores_with() -> None:
    counts = Exploration()
    counts.watch("1", now=0.0)
    counts.watch("2", now=500.0)
    counts.known["1"] = {"i1": (5, 1)}
    counts.show("1", "rid", ["i1", "i2"])
    assert counts.counts("1").get("i1") == (6, 1) and counts.counts("1").get("i9") == (0, 0)
    assert sorted(counts.due(now=501.0)) == ["1", "2"]
    assert counts.due(now=900.0) == ["2"] and "1" not in counts.known  # unused for 10 minutes: forgotten


def test_a_share_of_the_slots_shows_new_items_and_the_rest_is_the_list_as_before(
    c: TestClient, exploring: Settings
) -> None:
    news = new_items(exploring)
    explored, plain = home(c)["items"], home(c, "plain")["items"]
    assert [i["reason"]["kind"] for i in explored].count("explore") == 2
    assert [explored[4]["reason"], explored[9]["reason"]] == [{"kind": "explore"}] * 2
    assert {explored[4]["item_id"], explored[9]["item_id"]} <= news
    rest = [i["item_id"] for k, i in enumerate(explored) if k not in (4, 9)]
    assert rest == [i["item_id"] for i in plain][:8]  # the ranking itself moved down, untouched


def test_exploration_obeys_exclusions_availability_filters_and_pins(c: TestClient, exploring: Settings) -> None:
    first, second = sorted(new_items(exploring))  # the shop's new items: two
    rules = {
        "rules": [
            {"kind": "filter", "where": [{"field": "price", "op": "gte", "value": 0}]},
            {"kind": "pin", "item_id": "i149", "position": 5},
        ]
    }
    assert c.put("/v1/rules/home", json=rules, headers=ADMIN).status_code == 200
    try:
        for _ in range(10):  # one excluded: the other takes the first free slot after the pin, and no other
            items = home(c, exclude=first, details=True)["items"]
            assert first not in [i["item_id"] for i in items]
            assert items[4]["item_id"] == "i149" and items[4]["reason"] == {"kind": "pinned"}
            explored = [(k, i["item_id"]) for k, i in enumerate(items) if i["reason"]["kind"] == "explore"]
            assert explored == [(5, second)] and items[5]["price"] >= 0
        assert c.patch(f"/v1/items/{second}", json={"hidden": True}, headers=WRITE).status_code == 200
        items = home(c, exclude=first)["items"]  # the other hidden: no slot explores, the list is whole
        assert {first, second}.isdisjoint(i["item_id"] for i in items) and len(items) == 10
        assert "explore" not in [i["reason"]["kind"] for i in items]
        assert c.patch(f"/v1/items/{second}", json={"hidden": False}, headers=WRITE).status_code == 200
        last = {"rules": [{"kind": "pin", "item_id": "i149", "position": 10}]}  # the pick at 10 moves past the end
        assert c.put("/v1/rules/home", json=last, headers=ADMIN).status_code == 200
        service = c.app.state.service  # type: ignore[attr-defined]
        items = home(c)["items"]
        assert items[9]["item_id"] == "i149" and [i["reason"]["kind"] for i in items].count("explore") == 1
        assert all(service.exploration.lists.values())  # no list of no explored item (an empty SADD is an error)
        c.portal.call(service.flush_exposures)  # type: ignore[union-attr]
        assert not service.guard.open and home(c)["source"] != "fallback"
        r = redis.Redis.from_url(str(exploring.redis_url), decode_responses=True)
        categories = [json.loads(r.hget(KEYS.items(str(r.get(KEYS.active))), i))["category"] for i in (first, second)]
        other = {"kind": "filter", "where": [{"field": "category", "op": "not_in", "value": categories}]}
        assert c.put("/v1/rules/home", json={"rules": [other]}, headers=ADMIN).status_code == 200
        items = home(c, user_id="u2", details=True)["items"]  # a filter both new items fail
        assert items and "explore" not in [i["reason"]["kind"] for i in items]
        assert not set(categories) & {i["category"] for i in items}
    finally:
        c.put("/v1/rules/home", json={}, headers=ADMIN)
        c.patch(f"/v1/items/{second}", json={"hidden": False}, headers=WRITE)


def test_what_is_shown_and_clicked_is_counted_and_turns_the_draws(c: TestClient, exploring: Settings) -> None:
    r = redis.Redis.from_url(str(exploring.redis_url), decode_responses=True)
    service = c.app.state.service  # type: ignore[attr-defined]
    model_version = home(c, "plain")["model_version"]
    r.delete(KEYS.explore(model_version))  # counted from here on (this module's other tests showed some)
    answers = [home(c, "one") for _ in range(40)]  # one slot, two new items: they take turns
    shown = Counter(i["item_id"] for a in answers for i in a["items"] if i["reason"]["kind"] == "explore")
    favourite = shown.most_common(1)[0][0]
    explored = [
        a for a in answers if favourite in [i["item_id"] for i in a["items"] if i["reason"]["kind"] == "explore"]
    ]
    other = next(a for a in answers if a not in explored)  # a list whose slot explored the other item
    deadline = time.monotonic() + 10
    while not r.exists(KEYS.explored(explored[0]["recommendation_id"])):  # written at the next round of upkeep
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.smembers(KEYS.explored(explored[0]["recommendation_id"])) == {favourite}
    assert 0 < r.ttl(KEYS.explored(explored[0]["recommendation_id"])) <= CLICK_WINDOW_SECONDS
    click = {"user_id": "u1", "item_id": favourite, "event_type": "view", "timestamp": time.time()}
    events = [
        click | {"recommendation_id": explored[0]["recommendation_id"]},  # counted
        click | {"recommendation_id": explored[0]["recommendation_id"]},  # the same list again: replayed, not counted
        click | {"recommendation_id": other["recommendation_id"]},  # a list that did not explore it
        click | {"recommendation_id": home(c, "plain")["recommendation_id"]},  # a placement that does not explore
        click,  # from no list
    ]
    for event in events:
        assert c.post("/v1/events", json=event, headers=READ).status_code == 202  # the browser's key
    deadline = time.monotonic() + 10
    while r.hget(KEYS.explore(model_version), f"clicked:{favourite}") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    stored = r.hgetall(KEYS.explore(model_version))
    assert {k: int(v) for k, v in stored.items() if k.startswith("shown:")} == {
        f"shown:{i}": n for i, n in shown.items()
    }
    assert int(stored[f"clicked:{favourite}"]) == 1 and r.ttl(KEYS.explore(model_version)) > 0

    r.hset(KEYS.explore(model_version), f"shown:{favourite}", 100_000)  # shown everywhere, almost never clicked
    service.exploration.read_at[model_version] = float("-inf")  # read back at the next round of upkeep
    deadline = time.monotonic() + 10
    while service.exploration.known.get(model_version, {}).get(favourite, (0, 0))[0] < 100_000:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    after = Counter(
        i["item_id"] for _ in range(40) for i in home(c, "one")["items"] if i["reason"]["kind"] == "explore"
    )
    assert after[favourite] < shown[favourite] / 4  # its posterior is narrow and low: the slots go to others
