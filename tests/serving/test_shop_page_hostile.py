"""The shop page renders what the API returns as text: an item id and a title that carry script, pinned
on home, product and cart, show as characters in headless Chromium, and no script of theirs runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
from playwright.sync_api import sync_playwright
from pydantic import SecretStr

from recommender.config import Settings
from serving.app import SHOP_HEADERS, STATIC, create_app
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, needs_chromium, served_live

pytestmark = needs_chromium

HOSTILE_ID = "<img src=x onerror=alert('id')>"
HOSTILE_TITLE = "<script>alert('title')</script><img src=x onerror=\"alert('title-img')\">"


def test_no_static_file_writes_markup_from_data() -> None:
    for path in (p for p in STATIC.rglob("*") if p.is_file()):  # the shop page's files and the console's
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, (path.name, sink)


def test_script_in_an_item_id_or_title_never_runs_on_home_product_or_cart(
    api_settings: Settings, tmp_path: Path
) -> None:
    keyed = api_settings.model_copy(update={"api_keys": SecretStr("page:events,ops:admin"), "live_poll_seconds": 0.0})
    with served_live(create_app(keyed)) as url:
        backend = {"X-API-Key": "ops"}  # rules and catalog changes
        with httpx.Client(base_url=url, headers=backend) as api:
            for placement in ("home", "product", "cart"):
                pin = {"rules": [{"kind": "pin", "item_id": HOSTILE_ID, "position": 1}]}
                assert api.put(f"/v1/rules/{placement}", json=pin).status_code == 200
            real = api.get("/v1/users/u1/recommendations", params={"n": 3}).json()["items"][1]["item_id"]
            for item in (HOSTILE_ID, real):
                changed = api.patch(f"/v1/items/{quote(item, safe='')}", json={"title": HOSTILE_TITLE})
                assert changed.status_code == 200, changed.text
            shop = api.get("/shop/")
            assert all(shop.headers[k] == v for k, v in SHOP_HEADERS.items())
            assert "script-src 'self'" in shop.headers["content-security-policy"]
        dialogs: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{url}/shop/")
            page.fill("#key", "page")
            page.click("#show")
            page.wait_for_selector("#recs .card")
            first = page.locator("#recs .card").first
            assert first.get_attribute("data-item") == HOSTILE_ID
            assert first.locator(".title").inner_text() == HOSTILE_TITLE  # the characters, not markup
            titles = page.locator("#recs .card .title").all_inner_texts()
            assert titles.count(HOSTILE_TITLE) == 2
            first.locator(".title").click()  # its product page
            page.wait_for_selector("#similar .card")
            assert page.locator("#product-title").inner_text() == HOSTILE_TITLE
            assert page.locator("#similar .card").first.get_attribute("data-item") == HOSTILE_ID
            first.locator(".cart").click()  # into the cart
            page.wait_for_selector("#cart-items li")
            page.wait_for_selector("#cart-recs .card")
            assert page.locator("#cart-items li").first.inner_text() == HOSTILE_TITLE
            assert page.locator("#cart-recs .card").first.get_attribute("data-item") == HOSTILE_ID
            page.wait_for_timeout(300)  # an onerror of a broken image would have fired by now
            assert page.locator("#recs img, #similar img, #cart-recs img, #cart-items img").count() == 0
            page.screenshot(path=str(tmp_path / "hostile.png"), full_page=True)
            browser.close()
        assert dialogs == []
