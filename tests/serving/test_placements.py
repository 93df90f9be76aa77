"""Placements, pages without repeats, and merchandising rules through the API (real Valkey)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recommender.cli import app as cli
from recommender.config import Settings, get_settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys
from serving.schemas import PlacementList
from tests.conftest import SECRET

KEYS = Keys("recsys")
READ, WRITE, ADMIN = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}, {"X-API-Key": "ops"}


def get(c: TestClient, name: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = c.get(f"/v1/placements/{name}", params=params, headers=READ)
    assert response.status_code == 200, response.text
    PlacementList.model_validate(response.json())
    return response.json()  # type: ignore[no-any-return]


def ids(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [i["item_id"] for i in body["items"]]


def similar_of(settings: Settings, item: str) -> list[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    return list(orjson.loads(r.get(KEYS.similar(str(r.get(KEYS.active)), item)) or b'{"items":[]}')["items"])


def test_home_is_the_users_list_and_names_its_placement(c: TestClient) -> None:
    home = get(c, "home", user_id="u1", n=6)
    direct = c.get("/v1/users/u1/recommendations", params={"n": 6}, headers=READ).json()
    assert ids(home) == ids(direct) and home["source"] == "personalized"
    assert re.fullmatch(r"1-home-[0-9a-f]{24}-[0-9a-f]{16}", home["recommendation_id"])


def test_product_shows_similar_items_personalized_for_a_known_user(c: TestClient, keyed: Settings) -> None:
    anonymous = get(c, "product", item_id="i3")
    similar = [i for i in similar_of(keyed, "i3")]
    assert len(ids(anonymous)) == 8 and "i3" not in ids(anonymous)  # the config's n
    assert ids(anonymous) == [i for i in similar if i in ids(anonymous)][:8]
    assert "-product-" in anonymous["recommendation_id"]
    personal = get(c, "product", item_id="i3", user_id="u1", n=8)
    assert set(ids(personal)) <= set(similar) and "i3" not in ids(personal)
    assert c.get("/v1/placements/product", headers=READ).status_code == 422  # no item_id
    assert c.get("/v1/placements/nowhere", headers=READ).status_code == 404
    assert c.get("/v1/placements/Bad-Name", headers=READ).status_code == 422


def stored_list(settings: Settings, key_of: Callable[[str], str]) -> tuple[list[str], list[float]]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    value = r.get(key_of(str(r.get(KEYS.active))))
    data = orjson.loads(value) if value else {"items": [], "scores": []}
    return list(data["items"]), list(data["scores"])


def test_cart_shows_what_is_bought_together_without_the_cart(c: TestClient, keyed: Settings) -> None:
    item = next(i for i in (f"i{k}" for k in range(150)) if stored_list(keyed, lambda v, i=i: KEYS.together(v, i))[0])
    together = stored_list(keyed, lambda v: KEYS.together(v, item))[0]
    body = get(c, "cart", cart=item, n=3)
    assert body["source"] == "together" and "-cart-" in body["recommendation_id"]
    assert ids(body) == [i for i in together if i != item][:3]
    two = get(c, "cart", cart=f"{item},{together[0]}")
    assert len(ids(two)) == 6 and not {item, together[0]} & set(ids(two))
    assert c.get("/v1/placements/cart", headers=READ).status_code == 422


def test_buy_again_offers_bought_items_whose_interval_has_passed(c: TestClient, keyed: Settings) -> None:
    r = redis.Redis.from_url(str(keyed.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    intervals = {k: float(v) for k, v in r.hgetall(KEYS.repurchase(version)).items()}
    assert intervals  # the synthetic shop buys its categories again
    answered = 0
    for n in range(60):
        user = f"u{n}"
        body = get(c, "buy_again", user_id=user, n=20, details=True)
        bought = dict(zip(*stored_list(keyed, lambda v, u=user: KEYS.bought(v, pseudonymize(u, SECRET))), strict=True))
        for entry in body["items"]:
            assert entry["item_id"] in bought and time.time() - bought[entry["item_id"]] >= intervals[entry["category"]]
            assert entry["reason"] == {"kind": "buy_again"}
        scores = [e["score"] for e in body["items"]]
        assert scores == sorted(scores, reverse=True) and all(s >= 1 for s in scores)  # elapsed / interval
        answered += bool(body["items"])
    assert answered > 0
    assert c.get("/v1/placements/buy_again", headers=READ).status_code == 422


def test_recently_viewed_is_the_session_newest_first(c: TestClient) -> None:
    events = [
        {"user_id": "viewer", "item_id": item, "event_type": "view", "timestamp": f"2026-12-01T10:0{k}:00Z"}
        for k, item in enumerate(["i4", "i9", "i6"])
    ]
    assert c.post("/v1/events", json=events, headers=WRITE).status_code == 202
    assert ids(get(c, "recently_viewed", user_id="viewer")) == ["i6", "i9", "i4"]
    c.patch("/v1/items/i9", json={"hidden": True}, headers=WRITE)
    assert ids(get(c, "recently_viewed", user_id="viewer")) == ["i6", "i4"]
    c.patch("/v1/items/i9", json={"hidden": False}, headers=WRITE)
    assert c.get("/v1/placements/recently_viewed", headers=READ).status_code == 422


def test_pages_of_one_cursor_never_repeat(c: TestClient) -> None:
    first = get(c, "home", user_id="u3", n=10, paginate=True)
    cursor, seen = first["cursor"], ids(first)
    assert cursor and len(seen) == 10
    for _ in range(6):
        page = get(c, "home", user_id="u3", n=10, cursor=cursor)
        assert page["cursor"] == cursor and not set(ids(page)) & set(seen)
        seen += ids(page)
    assert len(seen) == len(set(seen)) == 70
    assert ids(get(c, "home", user_id="u3", n=10))[:10] == ids(first)  # without the cursor: page one again
    assert c.get("/v1/placements/home", params={"cursor": "x;DROP"}, headers=READ).status_code == 422


def test_a_per_request_category_cap(c: TestClient) -> None:
    body = get(c, "home", user_id="u1", n=8, max_per_category=1, details=True)
    categories = [i["category"] for i in body["items"]]
    distinct = len(set(categories))
    assert len(categories) == 8 and distinct > 1
    assert len(set(categories[:distinct])) == distinct  # one of each first; over-cap items only fill the end


def test_rules_through_the_api_are_validated_versioned_and_applied(c: TestClient) -> None:
    baseline = ids(get(c, "home", user_id="u1", n=5, details=True))
    rules = {
        "rules": [
            {"kind": "filter", "where": [{"field": "brand", "op": "ne", "value": "b0"}]},
            {"kind": "pin", "item_id": "i149", "position": 2},
        ]
    }
    assert c.put("/v1/rules/home", json=rules, headers=WRITE).status_code == 403
    put = c.put("/v1/rules/home", json=rules, headers=ADMIN)
    assert put.status_code == 200 and put.json()["by"] == "merch"
    shown = get(c, "home", user_id="u1", n=5, details=True)
    assert ids(shown)[1] == "i149" and all(i.get("brand") != "b0" for i in shown["items"][:1] + shown["items"][2:])
    assert c.get("/v1/rules/home", headers=ADMIN).json()["rules"]["rules"][1]["item_id"] == "i149"

    bad = c.put(
        "/v1/rules/home",
        json={"rules": [{"kind": "pin", "item_id": "x", "position": -1}, {"kind": "?"}]},
        headers=ADMIN,
    )
    assert bad.status_code == 422 and [e["rule"] for e in bad.json()["detail"]] == [0, 1]
    assert c.get("/v1/rules/home", headers=ADMIN).json()["rules"] == put.json()["rules"]  # unchanged
    assert c.put("/v1/rules/nowhere", json={}, headers=ADMIN).status_code == 404

    assert c.put("/v1/rules/home", json={}, headers=ADMIN).status_code == 200  # back to none
    assert ids(get(c, "home", user_id="u1", n=5, details=True)) == baseline
    history = c.get("/v1/rules/home/history", headers=ADMIN).json()
    assert [len(h["rules"].get("rules", [])) for h in history[:2]] == [0, 2] and history[0]["by"] == "merch"


def test_the_rules_cli_shares_the_history(keyed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(keyed.home))
    monkeypatch.setenv("RECSYS_REDIS_URL", str(keyed.redis_url))
    monkeypatch.setenv("RECSYS_HMAC_SECRET", keyed.hmac_secret.get_secret_value())
    get_settings.cache_clear()
    runner = CliRunner()
    good, bad = tmp_path / "rules.yaml", tmp_path / "bad.json"
    good.write_text("rules:\n  - kind: bury\n    where: [{field: brand, op: eq, value: b1}]\n    factor: 0.5\n")
    bad.write_text(json.dumps({"rules": [{"kind": "boost", "where": [], "factor": 2}]}))
    try:
        assert runner.invoke(cli, ["rules", "check", str(good)]).exit_code == 0
        failed = runner.invoke(cli, ["rules", "put", "product", str(bad)])
        assert failed.exit_code != 0 and "rule 0" in failed.output and "nothing was stored" in failed.output
        stored = runner.invoke(cli, ["rules", "put", "product", str(good), "--json"])
        assert stored.exit_code == 0 and json.loads(stored.stdout)["by"].startswith("cli:")
        history = runner.invoke(cli, ["rules", "history", "product", "--json"])
        assert [h["rules"]["rules"][0]["kind"] for h in json.loads(history.stdout)][:1] == ["bury"]
        assert runner.invoke(cli, ["rules", "get", "nowhere"]).exit_code != 0
    finally:
        runner.invoke(cli, ["rules", "put", "product", str(_empty(tmp_path))])
        get_settings.cache_clear()


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.json"
    path.write_text("{}")
    return path


def test_an_expired_or_unknown_cursor_is_a_410_never_a_silent_restart(c: TestClient, keyed: Settings) -> None:
    made_up = c.get("/v1/placements/home", params={"user_id": "u3", "cursor": "A" * 24}, headers=READ)
    assert made_up.status_code == 410 and "paginate=true" in made_up.json()["detail"]
    first = get(c, "home", user_id="u3", n=5, paginate=True)
    redis.Redis.from_url(str(keyed.redis_url)).delete(KEYS.cursor(first["cursor"]))  # as its TTL would
    expired = c.get("/v1/placements/home", params={"user_id": "u3", "cursor": first["cursor"]}, headers=READ)
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]


def test_an_empty_first_page_still_opens_its_cursor(c: TestClient) -> None:
    empty = get(c, "home", user_id="u3", n=5, category="no-such-category", paginate=True)
    assert empty["items"] == [] and empty["cursor"]
    again = get(c, "home", user_id="u3", n=5, category="no-such-category", cursor=empty["cursor"])
    assert again["items"] == []


def test_concurrent_pages_of_one_cursor_never_repeat(keyed: Settings) -> None:
    """The defect: two pages asked for at once both read what was shown, and both showed the same items."""
    from recommender.online.redis_conn import async_client, server_url
    from recommender.online.service import PlacementQuery, RecommendationService

    async def pages() -> list[list[str]]:
        redis_client = async_client(keyed, server_url(keyed))
        service = RecommendationService(redis_client, keyed)
        try:
            first = await service.placement("home", PlacementQuery(user_id="u5", n=10, paginate=True))
            query = PlacementQuery(user_id="u5", n=10, cursor=first.cursor)
            answers = await asyncio.gather(*[service.placement("home", query) for _ in range(4)])
            return [[i["item_id"] for i in a.items] for a in (first, *answers)]
        finally:
            await redis_client.aclose()

    shown = asyncio.run(pages())
    flat = [i for page in shown for i in page]
    assert len(flat) == len(set(flat)) and len(shown[0]) == 10 and sum(map(len, shown[1:])) >= 30


def test_cursors_are_capped_per_user(c: TestClient, keyed: Settings) -> None:
    cap = keyed.cursors_per_owner
    opened = [get(c, "home", user_id="u8", n=2, paginate=True)["cursor"] for _ in range(cap + 5)]
    r = redis.Redis.from_url(str(keyed.redis_url))
    alive = [t for t in opened if r.exists(KEYS.cursor(t))]
    assert alive == opened[5:]  # the five oldest went
    oldest = c.get("/v1/placements/home", params={"user_id": "u8", "cursor": opened[0]}, headers=READ)
    assert oldest.status_code == 410
    assert c.get("/v1/placements/home", params={"user_id": "u8", "cursor": opened[-1]}, headers=READ).status_code == 200


def test_the_hand_checked_parameters_keep_the_documented_bounds(c: TestClient) -> None:
    """The route is served by hand-written parsing (serving/params.py); its OpenAPI schema is the
    FastAPI-declared function's. At every documented bound, the served route agrees with the schema."""
    parameters = c.app.openapi()["paths"]["/v1/placements/{name}"]["get"]["parameters"]  # type: ignore[attr-defined]
    checked = 0
    for p in (p for p in parameters if p["in"] == "query"):
        schema = next((s for s in p["schema"].get("anyOf", [p["schema"]]) if s.get("type") != "null"), {})
        extra = {"item_id": "i1"} if p["name"] != "item_id" else {}
        cases: list[tuple[object, bool]] = []
        if schema.get("type") == "integer":
            cases = [(schema["minimum"] - 1, False), (schema["minimum"], True), (schema["maximum"], True)]
            cases.append((schema["maximum"] + 1, False))
        elif schema.get("type") == "boolean":
            cases = [("true", True), ("false", True), ("maybe", False), ("", False)]
        elif "maxLength" in schema and p["name"] != "cursor":  # a well-formed cursor must also be one issued
            cases = [("a" * schema["maxLength"], True), ("a" * (schema["maxLength"] + 1), False)]
        for value, ok in cases:
            response = c.get("/v1/placements/product", params={**extra, p["name"]: value}, headers=READ)
            assert (response.status_code == 200) == ok and response.status_code in (200, 422), (p["name"], value)
            checked += 1
    assert checked >= 20
