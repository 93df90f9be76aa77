"""Limits at the door: a cap on request bodies, checked before anything parses them (413 beyond
``RECSYS_MAX_BODY_BYTES``), and fair use: rate limits per key and per client address (429)."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from starlette.exceptions import HTTPException

from recommender.config import Settings, rate_limit_items
from serving.deps import key_of

TOO_LARGE = 413


class BodyLimitMiddleware:
    """Pure ASGI middleware: refuse a declared ``Content-Length`` over the cap at once, and stop reading a
    streamed (chunked) body as soon as it passes the cap."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI re-raises an HTTPException met while reading the body
                    raise HTTPException(TOO_LARGE, self._detail)
            return message

        await self.app(scope, counted, send)

    @property
    def _detail(self) -> str:
        return f"request body over {self.max_bytes} bytes (RECSYS_MAX_BODY_BYTES); send smaller batches"

    async def _refuse(self, send: Any) -> None:
        body = orjson.dumps({"detail": self._detail})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": TOO_LARGE, "headers": headers})
        await send({"type": "http.response.body", "body": body})


PUBLIC_ROLES = (None, "read", "events")
"""What a browser holds (no key, the read key, the events key): limited per client address as well."""
UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics")


class RateLimiter:
    """Per key and per client address limits, counted in this worker's memory (``limits``' sliding window).

    Each worker counts on its own, so with N workers (and M replicas) a client gets up to N x M times
    a limit: set the limits per worker. ``RECSYS_FORWARDED_ALLOW_IPS`` decides whose address counts.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
        items = rate_limit_items(settings)
        self.per_client = items.get("RECSYS_CLIENT_RATE_LIMIT")
        self.events_per_client = items.get("RECSYS_CLIENT_EVENT_LIMIT")
        self.per_key = {name: items[f"RECSYS_KEY_RATE_LIMITS[{name}]"] for name in settings.key_rate_limits}

    def _hit(self, item: Any, cost: int, *identifiers: str) -> int | None:
        """None when allowed; else the seconds to wait before the window has room again."""
        if item is None or self.strategy.hit(item, *identifiers, cost=cost):
            return None
        reset = self.strategy.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))

    def request(self, key: str | None, client: str | None) -> int | None:
        """Count one request of ``key`` from ``client``; the wait in seconds when over a limit."""
        found = key_of(key, self.settings)
        if found is not None and found.name in self.per_key:
            wait = self._hit(self.per_key[found.name], 1, "key", found.name)
            if wait is not None:
                return wait
        if (found.role if found else None) in PUBLIC_ROLES:
            return self._hit(self.per_client, 1, "client", client or "unknown")
        return None

    def events(self, role: str | None, client: str | None, count: int) -> int | None:
        """Count ``count`` events posted from ``client``; the wait in seconds when over the limit."""
        if role not in PUBLIC_ROLES:
            return None
        return self._hit(self.events_per_client, count, "events", client or "unknown")


def too_many(wait: int, what: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A 429's body and headers."""
    body = orjson.dumps({"detail": f"too many {what}: retry after {wait} s (fair use, RECSYS_*_LIMIT settings)"})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return body, [*headers, (b"retry-after", str(wait).encode())]


class RateLimitMiddleware:
    """Pure ASGI middleware: 429 with ``Retry-After`` once a key or a public client is over its limit."""

    def __init__(self, app: Any, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-api-key"), None)
        client = scope.get("client")
        wait = self.limiter.request(key, client[0] if client else None)
        if wait is None:
            await self.app(scope, receive, send)
            return
        body, headers = too_many(wait, "requests")
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
