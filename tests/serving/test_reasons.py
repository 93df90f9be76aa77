"""A reason on every item of every answer (real Valkey): the past item publishing found behind a personalized
item, the page's item, the cart's, the session's, a rule's pin or promotion, a new item, the popular fill."""

from __future__ import annotations

import numpy as np
import orjson
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys, decode_behind
from recommender.registry.tracking import load_bundle
from serving.app import create_app
from serving.schemas import PlacementList
from tests.conftest import SECRET

KEYS = Keys("recsys")
READ, WRITE, ADMIN = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}, {"X-API-Key": "ops"}


def get(c: TestClient, name: str, **params: object) -> list[dict]:  # type: ignore[type-arg]
    response = c.get(f"/v1/placements/{name}", params=params, headers=READ)
    assert response.status_code == 200, response.text
    PlacementList.model_validate(response.json())
    return response.json()["items"]  # type: ignore[no-any-return]


def active(settings: Settings) -> tuple[redis.Redis, str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    return r, str(r.get(KEYS.active))


def past_items(value: str | None) -> dict[str, str | None]:
    """Each item of a stored user list -> the past item publishing stored behind it."""
    ids, _, behind = decode_behind(value)
    assert behind is not None
    viewed, because = behind
    return {item: viewed[at] if at >= 0 else None for item, at in zip(ids, because, strict=True)}


def test_a_personalized_item_names_the_past_item_nearest_to_it_in_factor_space(c: TestClient, keyed: Settings) -> None:
    r, version = active(keyed)
    bundle, _ = load_bundle(keyed, "production")
    user = pseudonymize("u1", SECRET)
    stored = past_items(r.get(KEYS.user(version, user)))
    assert all(stored.values())
    row = int(bundle.vocab.user_rows([user])[0])
    history = bundle.user_items[row].indices
    space = bundle.model.item_space()
    assert space is not None
    for item, past in list(stored.items())[:20]:  # what publishing stored is the nearest past item
        col = int(bundle.vocab.item_cols([item])[0])
        assert past == bundle.vocab.items[history[np.argmax(space[history] @ space[col])]]
    items = get(c, "home", user_id="u1", n=10, details=True)
    titles = {i: orjson.loads(v).get("title") for i, v in r.hgetall(KEYS.items(version)).items()}
    for item in items:  # and the API says it, with the past item's title
        assert item["reason"] == {
            "kind": "similar_to",
            "item_id": stored[item["item_id"]],
            "title": titles[stored[item["item_id"]]],
        }


def test_unknown_users_and_the_fill_get_popular(c: TestClient) -> None:
    assert {i["reason"]["kind"] for i in get(c, "home", user_id="nobody-at-all", n=10)} == {"popular"}
    popular = c.get("/v1/popular", params={"n": 5}, headers=READ).json()["items"]
    assert [i["reason"] for i in popular] == [{"kind": "popular"}] * 5


def test_a_product_page_names_its_item_and_a_cart_its_items(c: TestClient, keyed: Settings) -> None:
    r, version = active(keyed)
    item = decode_behind(r.get(KEYS.user(version, pseudonymize("u1", SECRET))))[0][0]
    similar = set(orjson.loads(r.get(KEYS.similar(version, item)))["items"])
    for shown in get(c, "product", item_id=item, n=8):
        expected = {"kind": "similar_to", "item_id": item} if shown["item_id"] in similar else {"kind": "popular"}
        assert shown["reason"] == expected
    for shown in c.get(f"/v1/items/{item}/similar", params={"n": 5}, headers=READ).json()["items"]:
        assert shown["reason"] == {"kind": "similar_to", "item_id": item}
    cart = [item, "i3"]
    lists = {
        i: set(orjson.loads(r.get(KEYS.together(version, i)) or r.get(KEYS.similar(version, i)))["items"]) for i in cart
    }
    for shown in get(c, "cart", cart=",".join(cart), n=6):
        reason = shown["reason"]
        if reason["kind"] != "popular":
            assert reason["kind"] in ("bought_together", "similar_to") and shown["item_id"] in lists[reason["item_id"]]
            kind = "bought_together" if r.exists(KEYS.together(version, reason["item_id"])) else "similar_to"
            assert reason["kind"] == kind


def test_pins_and_promotions_say_so(c: TestClient) -> None:
    rules = {
        "rules": [
            {"kind": "pin", "item_id": "i149", "position": 2},
            {"kind": "promote", "where": [{"field": "brand", "op": "eq", "value": "b1"}], "share": 0.3},
        ]
    }
    assert c.put("/v1/rules/home", json=rules, headers=ADMIN).status_code == 200
    try:
        items = get(c, "home", user_id="u1", n=10, details=True)
    finally:
        assert c.put("/v1/rules/home", json={}, headers=ADMIN).status_code == 200
    assert items[1]["item_id"] == "i149" and items[1]["reason"] == {"kind": "pinned"}
    promoted = [i for i in items if i["reason"]["kind"] == "promoted"]
    assert len(promoted) == 3 and all(i["brand"] == "b1" for i in promoted)
    assert {i["reason"]["kind"] for i in items} == {"pinned", "promoted", "similar_to"}


def test_a_session_item_names_the_session_item_behind_it(c: TestClient, keyed: Settings) -> None:
    r, version = active(keyed)
    r.delete(KEYS.session(pseudonymize("u9", SECRET)))
    viewed = "i5"
    event = {"user_id": "u9", "item_id": viewed, "event_type": "view", "timestamp": "2025-06-01T00:00:00Z"}
    assert c.post("/v1/events", json=event, headers=WRITE).status_code == 202
    neighbours = set(orjson.loads(r.get(KEYS.similar(version, viewed)))["items"])
    stored = past_items(r.get(KEYS.user(version, pseudonymize("u9", SECRET))))
    items = get(c, "home", user_id="u9", n=10)
    for item in items:
        if item["item_id"] in neighbours:
            assert item["reason"] == {"kind": "session", "item_id": viewed}
        else:
            assert item["reason"] == {"kind": "similar_to", "item_id": stored[item["item_id"]]}
    assert {"kind": "session", "item_id": viewed} in [i["reason"] for i in items]
    assert [i["reason"] for i in get(c, "recently_viewed", user_id="u9")] == [{"kind": "session"}]


def test_the_new_placement_says_new(c: TestClient) -> None:
    items = get(c, "new", user_id="u1", n=5)
    assert items and all(i["reason"] == {"kind": "new"} for i in items)


def test_a_session_re_scored_by_the_sequential_model_names_the_nearest_item_of_the_sequence(
    sequential_settings: Settings,
) -> None:
    r, version = active(sequential_settings)
    user = next(f"u{i}" for i in range(400) if r.exists(KEYS.sequence(version, pseudonymize(f"u{i}", SECRET))))
    pseudonym = pseudonymize(user, SECRET)
    past = orjson.loads(str(r.get(KEYS.sequence(version, pseudonym))))
    with TestClient(create_app(sequential_settings)) as client:
        before = client.get(f"/v1/users/{user}/recommendations?n=10").json()["items"]
        viewed = [i["item_id"] for i in before[:2]]  # its top two: the answer must change
        for k, item in enumerate(viewed):
            event = {"user_id": user, "item_id": item, "event_type": "view", "timestamp": f"2025-06-01T00:0{k}:00Z"}
            assert client.post("/v1/events", json=event).status_code == 202
        after = client.get(f"/v1/users/{user}/recommendations?n=10").json()
    bundle, _ = load_bundle(sequential_settings, "production")
    space = bundle.model.item_space()
    assert space is not None and after["source"] == "session"
    sequence = bundle.vocab.item_cols([*past, *viewed][-int(bundle.model.params["max_len"]) :])  # what it read
    for item in after["items"]:
        col = int(bundle.vocab.item_cols([item["item_id"]])[0])
        nearest = str(bundle.vocab.items[sequence[np.argmax(space[sequence] @ space[col])]])
        kind = "session" if nearest in viewed else "similar_to"
        assert item["reason"] == {"kind": kind, "item_id": nearest}, item


def test_reasons_can_be_turned_off(keyed: Settings) -> None:
    with TestClient(create_app(keyed.model_copy(update={"reasons": False}))) as off:
        items = get(off, "home", user_id="u1", n=5, details=True) + get(off, "product", item_id="i3", n=5)
    assert items and not any("reason" in i for i in items)
