"""The shop page in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path

import redis
from playwright.sync_api import sync_playwright

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.serving.conftest import SECRET

pytestmark = needs_chromium


def test_shop_page_shows_recommendations_and_sends_events(
    live_url: str, api_settings: Settings, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(str(api_settings.redis_url), decode_responses=True)
    before = r.xlen(Keys().events)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{live_url}/shop/")
        page.wait_for_selector("#recs .card")
        cards = page.locator("#recs .card")
        assert cards.count() == 12
        assert page.locator("#meta").inner_text().startswith("source: personalized")
        first_item = cards.first.get_attribute("data-item")
        assert cards.first.locator(".title").inner_text().startswith("Product")
        cards.first.locator(".title").click()
        page.wait_for_selector("#similar .card")
        assert page.locator("#similar .card").count() == 6
        cards.first.locator(".cart").click()
        page.wait_for_function("document.querySelectorAll('#calls li').length >= 4")
        page.screenshot(path=str(tmp_path / "shop.png"), full_page=True)
        calls = page.locator("#calls li").all_inner_texts()
        browser.close()
    assert any(c.startswith("POST /v1/events -> 202") for c in calls)
    entries = [fields for _, fields in r.xrange(Keys().events)[before:]]
    user = pseudonymize("u1", SECRET)
    assert [(e["event_type"], e["item_id"], e["user_id"]) for e in entries] == [
        ("view", first_item, user),
        ("add_to_cart", first_item, user),
    ]
    assert all(e.get("recommendation_id") for e in entries)  # the page passes the list's id along
