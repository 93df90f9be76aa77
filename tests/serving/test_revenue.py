"""A placement with the revenue objective (real Valkey): the version carries the model's calibration from
training; the personalized list's head is ordered by p(rank) x price ** exponent, a live price change counts,
every item keeps its reason, and the relevance objective is untouched."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys, decode
from recommender.online.revenue import EXPONENTS, by_value
from serving.app import create_app
from tests.conftest import SECRET

KEYS = Keys("recsys")
READ, WRITE = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}


@pytest.fixture(scope="module")
def priced(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("revenue") / "placements.json"
    placements = {
        "home": {"feed": "user"},
        "rich": {"feed": "user", "objective": "revenue", "sensitivity": "high"},
        "some": {"feed": "user", "objective": "revenue", "sensitivity": "low"},
    }
    path.write_text(json.dumps({"placements": placements}))
    return api_settings.model_copy(
        update={"api_keys": SecretStr("shop:read,backend:write"), "live_poll_seconds": 0.0, "placements_file": path}
    )


@pytest.fixture
def c(priced: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(priced)) as client:
        yield client


def items(c: TestClient, placement: str, user: str = "u2") -> list[dict]:  # type: ignore[type-arg]
    response = c.get(f"/v1/placements/{placement}", params={"user_id": user, "n": 10}, headers=READ)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def expected(settings: Settings, sensitivity: str, prices: dict[str, float] | None = None) -> list[str]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))
    calibration = json.loads(r.hget(KEYS.meta(version), "calibration"))
    ids, scores = decode(r.get(KEYS.user(version, pseudonymize("u2", SECRET))))
    known = {i: orjson.loads(v)["price"] for i, v in zip(ids, r.hmget(KEYS.items(version), ids), strict=True) if v}
    ordered, _ = by_value(ids, scores, calibration, {**known, **(prices or {})}, EXPONENTS[sensitivity])
    return ordered[:10]


def test_the_version_carries_a_calibration_that_never_rises(priced: Settings) -> None:
    r = redis.Redis.from_url(str(priced.redis_url), decode_responses=True)
    calibration = json.loads(r.hget(KEYS.meta(str(r.get(KEYS.active))), "calibration"))
    assert len(calibration) == 50 and calibration[0] > 0
    assert all(a >= b for a, b in itertools.pairwise(calibration))


def test_revenue_orders_by_expected_value_and_keeps_each_reason(c: TestClient, priced: Settings) -> None:
    plain, rich, some = items(c, "home"), items(c, "rich"), items(c, "some")
    assert [i["item_id"] for i in rich] == expected(priced, "high") != [i["item_id"] for i in plain]
    assert [i["item_id"] for i in some] == expected(priced, "low")
    assert [i["score"] for i in rich] == sorted((i["score"] for i in rich), reverse=True)
    reasons = {i["item_id"]: i["reason"] for i in plain}
    assert all(i["reason"] == reasons[i["item_id"]] for i in rich if i["item_id"] in reasons)
    assert [i["item_id"] for i in items(c, "rich", "nobody-known")] == [
        i["item_id"] for i in items(c, "home", "nobody-known")
    ]
    service = c.app.state.service  # type: ignore[attr-defined]
    version = redis.Redis.from_url(str(priced.redis_url), decode_responses=True).get(KEYS.active)
    _, bulk = c.portal.call(service.bulk, "rich", [pseudonymize("u2", SECRET)], 10, version)  # type: ignore[union-attr]
    assert [i["item_id"] for i in bulk[0]] == [i["item_id"] for i in rich]  # an export orders as the page does
    cheap = rich[0]["item_id"]  # the live catalog's price counts at once
    assert c.patch(f"/v1/items/{cheap}", json={"price": 0.01}, headers=WRITE).status_code == 200
    moved = [i["item_id"] for i in items(c, "rich")]
    assert moved == expected(priced, "high", {cheap: 0.01}) and moved[0] != cheap
