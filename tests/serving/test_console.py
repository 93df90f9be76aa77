"""The operator's console in headless Chromium: it asks for an admin key and every call it makes needs one; it
shows the served version, each placement's rules and their history, the last experiment report and export, all
as text (a hostile rule value stays text)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest
import redis
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright
from pydantic import SecretStr

from recommender.config import Settings
from recommender.online.experiments import RecommendationIds
from recommender.online.keys import Keys
from recommender.ops.experiment_report import experiment_report
from recommender.ops.export import export_recommendations
from serving.app import create_app
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium, served_live

KEYS = Keys("recsys")
READ, ADMIN = {"X-API-Key": "shop"}, {"X-API-Key": "ops"}
HOSTILE = "<img src=x onerror=document.title=1>"


@pytest.fixture(scope="module")
def console_settings(api_settings: Settings) -> Settings:
    return api_settings.model_copy(
        update={"api_keys": SecretStr("shop:read,backend:write,ops:admin"), "live_poll_seconds": 0.0}
    )


@pytest.fixture(scope="module")
def console_url(console_settings: Settings) -> Iterator[str]:
    with served_live(create_app(console_settings)) as url:
        yield url


def stored_report(settings: Settings) -> dict:  # type: ignore[type-arg]
    """A report as `recsys experiment report` stores it for the console."""
    events = pa.table({"user_id": [], "recommendation_id": [], "event_type": [], "timestamp": []}).cast(
        pa.schema(
            [
                ("user_id", pa.string()),
                ("recommendation_id", pa.string()),
                ("event_type", pa.string()),
                ("timestamp", pa.timestamp("us", tz="UTC")),
            ]
        )
    )
    exposed = {"1": {f"u{k}" for k in range(30)}, "2": {f"u{k}" for k in range(30, 40)}}
    ids = RecommendationIds("x")
    report = experiment_report(events, exposed, {"1": 90, "2": 30}, "1", "2", "2026-12-01T00:00:00+00:00", "e1", ids)
    value = report.to_dict()
    redis.Redis.from_url(str(settings.redis_url)).set(KEYS.experiment_report, json.dumps(value))
    return value  # type: ignore[no-any-return]


def test_the_overview_needs_an_admin_key(console_settings: Settings) -> None:
    with TestClient(create_app(console_settings)) as c:
        assert c.get("/v1/admin/overview").status_code == 401
        assert c.get("/v1/admin/overview", headers=READ).status_code == 403
        body = c.get("/v1/admin/overview", headers=ADMIN).json()
    r = redis.Redis.from_url(str(console_settings.redis_url), decode_responses=True)
    assert body["active"]["version"] == r.get(KEYS.active) and body["active"]["model_version"] == "1"
    assert body["active"]["calibrated"] is True  # the version can serve revenue placements
    assert {p["name"] for p in body["placements"]} >= {"home", "product", "cart", "new"}
    assert body["challenger"] is None
    r.hset(KEYS.exports, "garbled", "{not json")  # written by another release, say: shown as such, never a 500
    r.set(KEYS.experiment_report, "NaN?")
    with TestClient(create_app(console_settings)) as c:
        body = c.get("/v1/admin/overview", headers=ADMIN).json()
    assert body["exports"]["garbled"] == {"unreadable": True} and body["experiment_report"] == {"unreadable": True}
    r.hdel(KEYS.exports, "garbled")
    r.delete(KEYS.experiment_report)


@needs_chromium
def test_the_console_shows_versions_rules_experiment_and_exports_as_text(
    console_url: str, console_settings: Settings
) -> None:
    rules = {"rules": [{"kind": "filter", "where": [{"field": "brand", "op": "ne", "value": HOSTILE}]}]}
    with TestClient(create_app(console_settings)) as c:
        assert c.put("/v1/rules/home", json=rules, headers=ADMIN).status_code == 200
    report = stored_report(console_settings)
    exported = export_recommendations(console_settings, n=3)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        calls: list[str | None] = []
        page.on(
            "request", lambda request: calls.append(request.headers.get("x-api-key")) if "/v1/" in request.url else None
        )
        page.goto(f"{console_url}/console/")
        assert not page.locator("#board").is_visible()
        page.fill("#key", "shop")  # a key, but not an admin's
        page.click("#open")
        expect(page.locator("#error")).to_contain_text("403")
        page.fill("#key", "ops")
        page.click("#open")
        expect(page.locator("#board")).to_be_visible()
        assert "ops" not in page.url  # the key is never in a URL
        assert "model v1" in page.locator("#versions").inner_text()
        home = page.locator('#placements tr[data-placement="home"]')
        assert HOSTILE in home.locator("td.rules").inner_text()  # the rule's value, as text
        assert page.locator("img").count() == 0 and page.title() == "recsys console"  # never as HTML
        home.locator("button").click()
        expect(page.locator("#history li").first).to_contain_text(HOSTILE)  # the change, newest first
        arms = page.locator("#arms tbody tr")
        expect(arms).to_have_count(2)
        assert arms.nth(0).locator("td").nth(2).inner_text() == str(report["production"]["users"])
        expect(page.locator("#exports tbody tr")).to_have_count(1)
        assert page.locator("#exports tbody tr td").nth(3).inner_text() == str(exported["rows"])
        browser.close()
    assert calls and set(calls) <= {"shop", "ops"} and calls[-1] == "ops"  # every call carries the key
