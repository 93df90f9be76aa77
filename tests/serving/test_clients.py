"""The Python client (sync and async) and the JS client against the real API over a real socket."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import recsys_client
from pydantic import SecretStr
from recsys_client import AsyncRecsysClient, RecsysClient, RecsysError

from recommender.config import Settings
from serving.app import create_app
from tests.conftest import served_live

STATIC = Path(__file__).resolve().parents[2] / "serving" / "static"


@pytest.fixture(scope="module")
def url(api_settings: Settings) -> Iterator[str]:
    keyed = api_settings.model_copy(
        update={
            "api_keys": SecretStr("shop:read,page:events,backend:write,ops:admin:ops-team"),
            "live_poll_seconds": 0.0,
        }
    )
    with served_live(create_app(keyed)) as base:
        yield base


def test_the_sync_client_reads_pages_writes_and_reports_errors(url: str) -> None:
    with RecsysClient(url, api_key="shop") as shop, RecsysClient(url, api_key="backend") as backend:
        first = shop.placement("home", user_id="u1", n=5, paginate=True)
        assert first.source == "personalized" and first.cursor and len(first.items) == 5
        second = shop.placement("home", user_id="u1", n=5, cursor=first.cursor)
        assert not set(first.item_ids) & set(second.item_ids)
        assert shop.recommendations("u1", 5).item_ids == first.item_ids
        top = first.item_ids[0]
        assert top not in shop.similar(top, 5).item_ids and len(shop.popular(3).items) == 3
        assert shop.placement("product", item_id=top, details=True).items[0].details["category"]
        assert shop.placement("product", item_id=top).items[0].reason == {"kind": "similar_to", "item_id": top}
        assert backend.update_item(top, in_stock=False) == 1
        assert top not in shop.recommendations("u1", 5).item_ids
        assert backend.update_items([{"item_id": top, "in_stock": True}]) == 1
        assert shop.recommendations("u1", 5).item_ids[0] == top
        event = {"user_id": "u9", "item_id": top, "event_type": "view", "timestamp": "2026-12-01T10:00:00Z"}
        assert backend.send_events([event]) == 1
        with pytest.raises(RecsysError) as refused:
            shop.update_item(top, hidden=True)  # a read key
        assert refused.value.status == 403
        with pytest.raises(RecsysError) as missing:
            shop.placement("nowhere")
        assert missing.value.status == 404 and "home" in str(missing.value.detail)


def test_the_async_client_manages_rules(url: str) -> None:
    async def run() -> None:
        async with AsyncRecsysClient(url, api_key="ops") as ops:
            rules = {"rules": [{"kind": "pin", "item_id": "i5", "position": 1}]}
            assert (await ops.put_rules("home", rules))["by"] == "ops-team"
            assert (await ops.placement("home", user_id="u2", n=3)).item_ids[0] == "i5"
            with pytest.raises(RecsysError) as bad:
                await ops.put_rules("home", {"rules": [{"kind": "boost", "where": [], "factor": 0}]})
            assert bad.value.status == 422 and bad.value.detail[0]["rule"] == 0
            assert (await ops.get_rules("home"))["rules"]["rules"][0]["item_id"] == "i5"
            await ops.put_rules("home", {})
            assert (await ops.popular(2)).source == "popular"

    asyncio.run(run())


def test_retries_what_is_safe_to_retry_and_nothing_else(url: str) -> None:
    calls: list[int] = []
    real = httpx.HTTPTransport()

    def flaky(request: httpx.Request) -> httpx.Response:  # the first two answers are lost or refused
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, json={"detail": "Redis unavailable; retry later"})
        return real.handle_request(request)

    with RecsysClient(url, api_key="shop", transport=httpx.MockTransport(flaky)) as api:
        assert len(api.recommendations("u1", 3).items) == 3 and len(calls) == 3
        calls.clear()
        with pytest.raises(RecsysError) as bad:
            api.recommendations("u1", 0)  # a 422 is the caller's to fix: never retried
        assert bad.value.status == 422 and len(calls) == 3  # the two injected faults, then the 422 once


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the browser test covers the page)")
def test_the_js_client_in_node(url: str, tmp_path: Path) -> None:
    script = tmp_path / "run.mjs"
    script.write_text(
        f"import {{ RecsysClient }} from {json.dumps(str(STATIC / 'recsys-client.js'))};\n"
        f"const api = new RecsysClient({json.dumps(url)}, {{ apiKey: 'shop' }});\n"
        "const page = await api.placement('home', { userId: 'u1', n: 4, paginate: true });\n"
        "const next = await api.placement('home', { userId: 'u1', n: 4, cursor: page.cursor });\n"
        "const cart = await api.placement('cart', { cart: [page.items[0].item_id] });\n"
        "console.log(JSON.stringify({ page: page.items.map(i => i.item_id), next: next.items.map(i => i.item_id),"
        " cart: cart.source }));\n"
    )
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert len(out["page"]) == 4 and not set(out["page"]) & set(out["next"]) and out["cart"] == "together"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the Python signer is tested alone)")
def test_both_clients_sign_a_user_as_the_api_checks(tmp_path: Path) -> None:
    from recommender.data.privacy import sign_user, verify_user_signature

    script = tmp_path / "sign.mjs"
    script.write_text(
        f"import {{ RecsysClient }} from {json.dumps(str(STATIC / 'recsys-client.js'))};\n"
        "console.log(await RecsysClient.signUser('ålice', 'the-secret', 1700000000.7));\n"
    )
    js = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    python = recsys_client.sign_user("ålice", "the-secret", 1700000000.7)
    assert js == python == sign_user("ålice", "the-secret", 1700000000)
    verify_user_signature("ålice", js, "the-secret", max_age=60, now=1700000030)  # raises when it does not hold
