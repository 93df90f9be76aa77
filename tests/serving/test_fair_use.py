"""Fair use: one key or one browser cannot exhaust what every shopper shares.

The events key ships in every shop page, so it is limited per client address as well as (optionally)
per key; the write role's backend is never limited per address. Over a limit: 429 with Retry-After.
"""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from serving.app import create_app
from tests.conftest import served_live

KEYS = SecretStr("shop:read:shop-page,page:events:page,backend:write:backend")
EVENT = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-06-01T00:00:00Z"}


def limited(settings: Settings, **fields: object) -> Settings:
    return settings.model_copy(update={"api_keys": KEYS, **fields})


def test_a_public_client_over_its_limit_gets_429_with_retry_after(api_settings: Settings) -> None:
    with TestClient(create_app(limited(api_settings, client_rate_limit="5/minute"))) as c:
        codes = [c.get("/v1/popular", headers={"X-API-Key": "shop"}).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        over = c.get("/v1/users/u1/recommendations", headers={"X-API-Key": "shop"})
        assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 60
        assert "retry after" in over.json()["detail"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes never limited
        backend = c.get("/v1/popular", headers={"X-API-Key": "backend"})
        assert backend.status_code == 200  # the shop's backend is not limited per address
        metrics = c.get("/metrics").text
        assert 'route="unmatched",status="429"' in metrics  # counted: refused before routing


def test_a_key_has_a_limit_of_its_own(api_settings: Settings) -> None:
    settings = limited(api_settings, key_rate_limits={"backend": "3/minute"})
    with TestClient(create_app(settings)) as c:
        codes = [c.get("/v1/popular", headers={"X-API-Key": "backend"}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert c.get("/v1/popular", headers={"X-API-Key": "shop"}).status_code == 200  # another key: its own count


def test_events_are_counted_one_by_one_per_address(api_settings: Settings) -> None:
    """The defect: one browser key posting 1,000 batches of 1,000 filled the whole backlog."""
    settings = limited(api_settings, client_event_limit="250/minute")
    with TestClient(create_app(settings)) as c:
        batch = [EVENT | {"item_id": f"i{k}"} for k in range(100)]
        codes = [c.post("/v1/events", json=batch, headers={"X-API-Key": "page"}).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        refused = c.post("/v1/events", json=EVENT | {"item_id": "one-more"}, headers={"X-API-Key": "page"})
        assert refused.status_code == 202  # 200 + 1 <= 250: a whole batch that would pass is refused, not a part
        assert c.post("/v1/events", json=batch, headers={"X-API-Key": "backend"}).status_code == 202


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(api_settings: Settings) -> None:
    settings = limited(api_settings, client_rate_limit="2/minute")

    def codes(url: str, client: str) -> list[int]:
        headers = {"X-API-Key": "shop", "X-Forwarded-For": client}
        return [httpx.get(f"{url}/v1/popular", headers=headers).status_code for _ in range(3)]

    with served_live(create_app(settings), proxy_headers=True, forwarded_allow_ips="127.0.0.1") as url:
        assert codes(url, "203.0.113.1") == [200, 200, 429]
        assert codes(url, "203.0.113.2") == [200, 200, 429]  # a second shopper behind the same proxy
    with served_live(create_app(settings), proxy_headers=False) as url:  # not trusted: the header is ignored
        assert codes(url, "203.0.113.3") == [200, 200, 429]
        assert codes(url, "203.0.113.4") == [429, 429, 429]
