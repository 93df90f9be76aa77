"""The recommendation API against a real Valkey holding a real published version."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import orjson
import pytest
import recsys_client
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.privacy import pseudonymize, sign_user
from recommender.online.keys import Keys
from serving.app import create_app
from serving.schemas import ItemList, Recommendations
from tests.conftest import SECRET

KEYS = Keys("recsys")


def published(settings: Settings, key_of: str) -> list[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    version = r.get(KEYS.active)
    key = {"popular": KEYS.popular(str(version))}.get(key_of) or KEYS.user(str(version), pseudonymize(key_of, SECRET))
    return list(orjson.loads(r.get(key))["items"])  # type: ignore[arg-type]


def test_known_user_gets_their_published_list(client: TestClient, api_settings: Settings) -> None:
    body = client.get("/v1/users/u1/recommendations", params={"n": 5}).json()
    Recommendations.model_validate(body)  # the documented response model
    assert body["source"] == "personalized" and body["model_version"] == "1" and body["user_id"] == "u1"
    assert [i["item_id"] for i in body["items"]] == published(api_settings, "u1")[:5]
    # the variant's model version, the placement, 96 random bits, the API's signature
    assert re.fullmatch(r"1-home-[0-9a-f]{24}-[0-9a-f]{16}", body["recommendation_id"])
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_user_gets_popular(client: TestClient, api_settings: Settings) -> None:
    body = client.get("/v1/users/somebody-new/recommendations", params={"n": 4}).json()
    assert body["source"] == "popular"
    assert [i["item_id"] for i in body["items"]] == published(api_settings, "popular")[:4]


def test_exclude_fills_from_popular_without_duplicates(client: TestClient, api_settings: Settings) -> None:
    own = published(api_settings, "u1")
    exclude = own[:-5]  # leave 5 of the user's candidates: the rest must come from popular items
    body = client.get("/v1/users/u1/recommendations", params={"n": 10, "exclude": ",".join(exclude)}).json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 == len(set(ids))
    assert not set(ids) & set(exclude)
    assert ids[:5] == own[-5:]
    assert all(i["score"] == 0.0 for i in body["items"][5:])  # fillers carry no model score


def test_category_filter_keeps_only_that_category(client: TestClient) -> None:
    body = client.get("/v1/users/u1/recommendations", params={"n": 8, "category": "c02", "details": True}).json()
    assert len(body["items"]) == 8
    assert {i["category"] for i in body["items"]} == {"c02"}
    assert len({i["item_id"] for i in body["items"]}) == 8
    unknown = client.get("/v1/users/u1/recommendations", params={"category": "no-such-category"}).json()
    assert unknown["items"] == []


def test_details_carry_catalog_fields(client: TestClient) -> None:
    item = client.get("/v1/users/u1/recommendations", params={"n": 1, "details": True}).json()["items"][0]
    assert {"title", "category", "price", "in_stock"} <= set(item)


def test_similar_and_popular(client: TestClient) -> None:
    similar = client.get("/v1/items/i1/similar", params={"n": 5}).json()
    ItemList.model_validate(similar)
    assert similar["source"] == "similar" and len(similar["items"]) == 5
    assert "i1" not in [i["item_id"] for i in similar["items"]]
    assert client.get("/v1/items/unknown-item/similar").json()["items"] == []
    popular = client.get("/v1/popular", params={"n": 3, "category": "c01", "details": True}).json()
    assert len(popular["items"]) == 3 and {i["category"] for i in popular["items"]} == {"c01"}


def test_events_are_validated_pseudonymized_and_streamed(client: TestClient, api_settings: Settings) -> None:
    r = redis.Redis.from_url(str(api_settings.redis_url), decode_responses=True)
    before = r.xlen(KEYS.events)
    event = {"user_id": "alice", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    assert client.post("/v1/events", json=event).json() == {"accepted": 1}
    batch = [event | {"event_type": "add_to_cart", "quantity": 1, "price": 3.5}, event | {"item_id": "i2"}]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    entries = r.xrange(KEYS.events, count=10_000)[before:]
    assert len(entries) == 3
    fields = entries[0][1]
    assert fields["user_id"] == pseudonymize("alice", SECRET) and "alice" not in str(entries)
    assert fields["event_id"] and fields["timestamp"].startswith("2025-01-01")

    bad = client.post("/v1/events", json=[event, event | {"event_type": "click"}, event | {"timestamp": "soon"}])
    assert bad.status_code == 422
    assert bad.json()["detail"] == [
        {"index": 1, "reason": "unknown_event_type"},
        {"index": 2, "reason": "bad_timestamp"},
    ]
    assert r.xlen(KEYS.events) == before + 3  # nothing of a bad batch is appended


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("get", "/v1/users/u1/recommendations?n=0", {}),
        ("get", "/v1/users/u1/recommendations?n=100000", {}),
        ("get", "/v1/users/u1/recommendations?n=abc", {}),
        ("get", "/v1/users/" + "x" * 300 + "/recommendations", {}),
        ("get", "/v1/popular?category=" + "c" * 300, {}),
        ("post", "/v1/events", {"content": b"{not json"}),
        ("post", "/v1/events", {"json": {"user_id": "u"}}),
        (
            "post",
            "/v1/events",
            {"json": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1}] * 1001},
        ),
        (
            "post",
            "/v1/events",
            {"json": {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1, "surprise": True}},
        ),
        # well-shaped values the hand-written fast paths must not turn into 500s (nor accept)
        *[
            ("post", "/v1/events", {"json": {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": t}})
            for t in (
                "2026-13-03T09:00:00Z",
                "2026-02-30T09:00:00Z",
                "2026-12-03T24:00:00Z",
                "2026-12-03T09:00:00+05:60",
            )
        ],
        *[
            (
                "post",
                "/v1/events",
                {"json": {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1, k: v}},
            )
            for k, v in (("session_id", "\t"), ("recommendation_id", "\r\n"))
        ],
        *[("get", f"/v1/users/u1/recommendations?n={v}", {}) for v in ("%C2%B2", "%2B%2B5", "%D9%A5", "9" * 4400)],
        *[
            ("get", f"/v1/placements/home?{q}", {})
            for q in ("n=%C2%B2", "max_per_category=%C2%B2", "details=", "paginate=")
        ],
        ("get", "/v1/placements/Not-A-Name", {}),
    ],
)
def test_malformed_requests_get_a_clear_4xx(client: TestClient, method: str, url: str, kwargs: dict) -> None:  # type: ignore[type-arg]
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code in (400, 413, 422), response.text
    assert "detail" in response.json()


def test_odd_unicode_ids_are_fine(client: TestClient) -> None:
    for user in ("ünïcødé-用户", "emoji-🛒", "spaces and more", "'; DROP TABLE users; --"):
        response = client.get(f"/v1/users/{user}/recommendations")
        assert response.status_code == 200 and response.json()["source"] == "popular"
    assert client.get("/v1/users/a%2Fb/recommendations").status_code == 404  # a slash cannot be a path segment


def test_health_ready_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["model_version"] == "1"
    client.get("/v1/users/u1/recommendations")
    metrics = client.get("/metrics").text
    assert (
        'recsys_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in metrics
    )
    assert 'recsys_recommendation_source_total{source="personalized"}' in metrics
    assert "recsys_active_model_version 1.0" in metrics
    schema = client.get("/openapi.json").json()
    assert "/v1/users/{user_id}/recommendations" in schema["paths"] and "examples" in str(schema)
    assert client.get("/docs").status_code == 200


def test_api_keys_and_roles(api_settings: Settings) -> None:
    keyed = api_settings.model_copy(
        update={"api_keys": SecretStr("shop-key:read,page-key:events,backend-key:write,ops-key:admin")}
    )
    assert not keyed.reads_open
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    with TestClient(create_app(keyed)) as c:
        url = "/v1/users/u1/recommendations"
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        for key in ("shop-key", "page-key", "backend-key", "ops-key"):
            assert c.get(url, headers={"X-API-Key": key}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open
        posted = {
            key: c.post("/v1/events", json=event, headers={"X-API-Key": key}).status_code
            for key in ("shop-key", "page-key", "backend-key", "ops-key", "wrong")
        }
        assert posted == {"shop-key": 403, "page-key": 202, "backend-key": 202, "ops-key": 202, "wrong": 401}
        assert c.post("/v1/events", json=event).status_code == 401
        forgot = {
            key: c.delete("/v1/users/nobody", headers={"X-API-Key": key}).status_code
            for key in ("shop-key", "page-key", "backend-key", "ops-key")
        }
        assert forgot == {"shop-key": 403, "page-key": 403, "backend-key": 403, "ops-key": 202}
    opened = keyed.model_copy(update={"open_reads": True})
    with TestClient(create_app(opened)) as c:
        assert c.get("/v1/popular").status_code == 200
        assert c.post("/v1/events", json=event).status_code == 401  # open reads never open writes


SIGNING_SECRET = "s" * 32


def signatures_required(settings: Settings, keys: str, **more: object) -> Settings:
    """``settings`` with these API keys, and user signatures (by :data:`SIGNING_SECRET`) required below write."""
    update = {"api_keys": SecretStr(keys), "user_signing_secret": SecretStr(SIGNING_SECRET)}
    return settings.model_copy(update={**update, "require_user_signature": True, **more})


def test_identity_verification_binds_events_and_personal_reads_to_the_signed_user(api_settings: Settings) -> None:
    secret = SIGNING_SECRET
    signed = signatures_required(api_settings, "page-key:events,backend-key:write")
    alice, mallory = sign_user("alice", secret), sign_user("mallory", secret)
    event = {"user_id": "alice", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    page = {"X-API-Key": "page-key"}
    with TestClient(create_app(signed)) as c:
        assert c.post("/v1/events", json=event, headers=page).status_code == 403
        assert c.post("/v1/events", json=event, headers=page | {"X-User-Signature": mallory}).status_code == 403
        assert c.post("/v1/events", json=event, headers=page | {"X-User-Signature": alice}).status_code == 202
        two_users = [event, event | {"user_id": "mallory"}]
        assert c.post("/v1/events", json=two_users, headers=page | {"X-User-Signature": alice}).status_code == 403
        assert c.post("/v1/events", json=two_users, headers={"X-API-Key": "backend-key"}).status_code == 202
        url = "/v1/users/alice/recommendations"
        assert c.get(url, headers=page).status_code == 403
        assert c.get(url, headers=page | {"X-User-Signature": mallory}).status_code == 403
        upper_hex = alice.replace(alice[-64:], alice[-64:].upper())  # the hex in either case
        assert c.get(url, headers=page | {"X-User-Signature": upper_hex}).status_code == 200
        assert c.get(url, headers={"X-API-Key": "backend-key"}).status_code == 200
        assert c.get("/v1/popular", headers=page).status_code == 200  # not personal: no signature needed
    with pytest.raises(ValueError, match="needs RECSYS_USER_SIGNING_SECRET"):
        Settings(require_user_signature=True)


def test_an_event_whose_recommendation_id_is_not_an_issued_shape_is_refused_with_its_reason(
    api_settings: Settings,
) -> None:
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    with TestClient(create_app(api_settings)) as c:
        for bad in ("1-home-00-é", "1 home", "<script>"[:-1] + "\u00a0>"):
            refused = c.post("/v1/events", json=event | {"recommendation_id": bad})
            assert refused.status_code == 422 and "bad_recommendation_id" in str(refused.json()), bad
        assert c.post("/v1/events", json=event | {"recommendation_id": "1-home-00ab-ff"}).status_code == 202


def test_ids_are_any_script_without_control_characters(client: TestClient) -> None:
    """The documented id set (serving.params.ID_PATTERN), at every route that takes an id; any script passes."""
    for path in (
        "/v1/users/a%01b/recommendations",
        "/v1/placements/home?user_id=a%00b",
        "/v1/placements/product?item_id=i%7F1",
        "/v1/items/i%1B1/similar",
        "/v1/users/u1%0A/recommendations",  # a trailing newline, which a regex's ``$`` lets through
    ):
        refused = client.get(path)
        text = str(refused.json())
        assert refused.status_code == 422 and ("control characters" in text or "pattern" in text), path
    assert client.get("/v1/users/%E7%94%A8%E6%88%B7/recommendations").status_code == 200  # 用户


def test_signatures_expire_and_any_header_text_gets_a_clear_4xx(api_settings: Settings) -> None:
    """A signature holds for the max age after its time; older or future-dated is 401 with the reason. Any
    header text a public key can send (non-ASCII, old-style bare hex, a forged time) is a 4xx on every
    personal route, never a 500."""
    secret = SIGNING_SECRET
    signed = signatures_required(api_settings, "page-key:events", user_signature_max_age=3600)
    now = time.time()
    fresh, stale, ahead = (sign_user("alice", secret, at) for at in (now - 60, now - 3700, now + 900))
    mac = fresh.split(",")[1]
    forged_time = f"t={int(now)},{mac}"  # a newer time on an old mac
    event = {"user_id": "alice", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    routes = [
        ("get", "/v1/users/alice/recommendations", {}),
        ("get", "/v1/placements/home?user_id=alice", {}),
        ("post", "/v1/events", {"json": event}),
    ]

    def status_of(c: TestClient, method: str, path: str, kwargs: dict[str, object], signature: str) -> tuple[int, str]:
        raw = {"X-API-Key": "page-key", "X-User-Signature": signature.encode("utf-8")}
        response = getattr(c, method)(path, headers=raw, **kwargs)
        return response.status_code, str(response.json().get("detail"))

    with TestClient(create_app(signed)) as c:
        for method, path, kwargs in routes:
            assert status_of(c, method, path, kwargs, fresh)[0] in (200, 202)
            code, detail = status_of(c, method, path, kwargs, stale)
            assert code == 401 and "expired" in detail
            code, detail = status_of(c, method, path, kwargs, ahead)
            assert code == 401 and "in the future" in detail
            for bad in (forged_time, mac.removeprefix("v1="), "t=1,v1=" + "é" * 64, "ünïcødé", "t=x,v1=00"):
                code, detail = status_of(c, method, path, kwargs, bad)
                assert code in (403, 422) and "X-User-Signature" in detail, (path, bad, code)
    assert recsys_client.sign_user("alice", secret, now) == sign_user("alice", secret, now)


def test_bodies_over_the_cap_are_refused_before_parsing(api_settings: Settings) -> None:
    capped = api_settings.model_copy(update={"max_body_bytes": 2048})
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
    r = redis.Redis.from_url(str(api_settings.redis_url), decode_responses=True)
    before = r.xlen(KEYS.events)
    with TestClient(create_app(capped)) as c:
        declared = c.post("/v1/events", json=[event] * 40)
        assert declared.status_code == 413 and "RECSYS_MAX_BODY_BYTES" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b"["
            for n in range(40):
                yield (b"," if n else b"") + orjson.dumps(event)
            yield b"]"

        streamed = c.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert c.post("/v1/events", json=[event] * 3).status_code == 202
        assert c.post("/v1/events", content=b"x", headers={"content-length": "nope"}).status_code == 413
    assert r.xlen(KEYS.events) == before + 3


def test_admin_role_is_enforced() -> None:
    from fastapi import HTTPException

    from serving.deps import authorize

    settings = Settings(api_keys="shop-key:read,ops-key:admin")
    with pytest.raises(HTTPException) as missing:
        authorize(settings, None, "admin")
    with pytest.raises(HTTPException) as wrong_role:
        authorize(settings, "shop-key", "admin")
    assert (missing.value.status_code, wrong_role.value.status_code) == (401, 403)
    assert authorize(settings, "ops-key", "admin") == "admin"
    with pytest.raises(ValueError, match="key:role") as malformed:
        Settings(api_keys="ok-key:read,the-secret-key-itself")
    assert "the-secret-key-itself" not in str(malformed.value) and "entry 2" in str(malformed.value)
