"""The shop page in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import re
from pathlib import Path

import redis
from playwright.sync_api import expect, sync_playwright

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, SECRET, needs_chromium

pytestmark = needs_chromium


def test_shop_page_home_product_cart(live_url: str, api_settings: Settings, tmp_path: Path) -> None:
    """Home, then a product page, then add to cart, then the cart: each list from its placement."""
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
        home = [cards.nth(k).get_attribute("data-item") for k in range(12)]
        page.click("#more")  # infinite scroll: the next page of the same cursor
        expect(cards).to_have_count(24)  # (not wait_for_function: the page's CSP refuses eval)
        everything = [cards.nth(k).get_attribute("data-item") for k in range(24)]
        assert everything[:12] == home and len(set(everything)) == 24

        first_item = home[0]
        assert cards.first.locator(".title").inner_text().startswith("Product")
        assert cards.first.get_attribute("data-reason") == "similar_to"  # the past item publishing found behind it
        assert re.fullmatch(r"Because you viewed Product .+", cards.first.locator(".why").inner_text())
        cards.first.locator(".title").click()  # the product page
        page.wait_for_selector("#similar .card")
        page.wait_for_selector("#together .card")
        assert page.locator("#product-title").get_attribute("data-item") == first_item
        similar = page.locator("#similar .card")
        assert similar.count() == 6 and first_item not in [similar.nth(k).get_attribute("data-item") for k in range(6)]
        product = page.locator("#product-title").inner_text()
        assert similar.first.locator(".why").inner_text() == f"Because you viewed {product}"
        together = page.locator("#together .card")
        assert 0 < together.count() <= 4

        cards.first.locator(".cart").click()  # add to cart, then the cart
        page.wait_for_selector("#cart-items li")
        page.wait_for_selector("#cart-recs .card")
        assert page.locator("#cart-items li").first.get_attribute("data-item") == first_item
        cart_recs = page.locator("#cart-recs .card")
        assert cart_recs.count() == 6
        assert first_item not in [cart_recs.nth(k).get_attribute("data-item") for k in range(6)]
        page.screenshot(path=str(tmp_path / "shop.png"), full_page=True)
        calls = page.locator("#calls li").all_inner_texts()
        assert page.locator("#error").inner_text() == ""
        browser.close()
    assert any(c.startswith("POST /v1/events -> 202") for c in calls)
    for placement in ("home", "product", "cart"):
        assert any(c.startswith(f"GET /v1/placements/{placement}?") and c.endswith("-> 200") for c in calls)
    entries = [fields for _, fields in r.xrange(Keys().events)[before:]]
    user = pseudonymize("u1", SECRET)
    assert [(e["event_type"], e["item_id"], e["user_id"]) for e in entries] == [
        ("view", first_item, user),
        ("add_to_cart", first_item, user),
    ]
    assert all(e.get("recommendation_id") for e in entries)  # the page passes the list's id along
