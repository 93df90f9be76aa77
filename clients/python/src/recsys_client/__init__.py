"""A typed client for the recsys recommendation API: :class:`RecsysClient` and :class:`AsyncRecsysClient`.

Both send the same requests (built once, in :class:`_Requests`) and parse the same answers;
they retry with exponential backoff what is safe to retry: a connection that failed, 429, and
502-504 (the API accepts nothing of a request it answers 503).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

__all__ = ["AsyncRecsysClient", "Item", "Listing", "RecsysClient", "RecsysError", "sign_user"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class RecsysError(Exception):
    """The API refused a request: ``status`` and its ``detail`` (what to fix)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class Item:
    """One item of a list; ``details`` holds the catalog fields when asked for, ``reason`` why it is shown
    (``{"kind": "similar_to", "item_id": "i7"}``: see the API's docs for the kinds)."""

    item_id: str
    score: float
    details: dict[str, Any] = field(default_factory=dict)
    reason: dict[str, Any] | None = None


@dataclass(frozen=True)
class Listing:
    """A list as served: its items, where it came from, its id (send it back with the events it leads to)."""

    items: list[Item]
    source: str
    model_version: str | None
    recommendation_id: str
    cursor: str | None = None

    @property
    def item_ids(self) -> list[str]:
        """The ids, in order."""
        return [i.item_id for i in self.items]


def _listing(body: Mapping[str, Any]) -> Listing:
    items = [
        Item(
            str(i["item_id"]),
            float(i["score"]),
            {k: v for k, v in i.items() if k not in ("item_id", "score", "reason")},
            i.get("reason"),
        )
        for i in body["items"]
    ]
    return Listing(items, body["source"], body.get("model_version"), body["recommendation_id"], body.get("cursor"))


def _csv(values: Iterable[str] | None) -> str | None:
    return None if values is None else ",".join(values)


def _query(**params: Any) -> dict[str, Any]:
    return {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RecsysError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise RecsysError(response.status_code, detail)
    return response.json()


class _Requests:
    """The API's routes as (method, path, query, body): one definition for both clients."""

    @staticmethod
    def recommendations(
        user_id: str,
        n: int = 10,
        exclude: Sequence[str] | None = None,
        category: str | None = None,
        details: bool = False,
    ) -> tuple[str, str, dict[str, Any], Any]:
        query = _query(n=n, exclude=_csv(exclude), category=category, details=details)
        return "GET", f"/v1/users/{user_id}/recommendations", query, None

    @staticmethod
    def placement(
        name: str,
        *,
        user_id: str | None = None,
        item_id: str | None = None,
        cart: Sequence[str] | None = None,
        n: int | None = None,
        exclude: Sequence[str] | None = None,
        category: str | None = None,
        max_per_category: int | None = None,
        details: bool = False,
        cursor: str | None = None,
        paginate: bool = False,
    ) -> tuple[str, str, dict[str, Any], Any]:
        query = _query(
            user_id=user_id, item_id=item_id, cart=_csv(cart), n=n, exclude=_csv(exclude), category=category,
            max_per_category=max_per_category, details=details, cursor=cursor, paginate=paginate or None,
        )  # fmt: skip
        return "GET", f"/v1/placements/{name}", query, None

    @staticmethod
    def similar(item_id: str, n: int = 10, details: bool = False) -> tuple[str, str, dict[str, Any], Any]:
        return "GET", f"/v1/items/{item_id}/similar", _query(n=n, details=details), None

    @staticmethod
    def popular(
        n: int = 10, category: str | None = None, details: bool = False
    ) -> tuple[str, str, dict[str, Any], Any]:
        return "GET", "/v1/popular", _query(n=n, category=category, details=details), None


def sign_user(user_id: str, secret: str | bytes, at: float | None = None) -> str:
    """``X-User-Signature`` for a signed-in user, made by the shop's backend (never in a page: it needs the
    signing secret): ``t=<unix seconds>,v1=<HMAC-SHA256 hex of user-v1:<t>:<user_id>>``. It holds for
    ``RECSYS_USER_SIGNATURE_MAX_AGE`` seconds after ``t``."""
    t = int(time.time() if at is None else at)
    key = secret.encode() if isinstance(secret, str) else secret
    return f"t={t},v1={hmac.digest(key, f'user-v1:{t}:'.encode() + user_id.encode('utf-8'), 'sha256').hex()}"


class _Base:
    def __init__(self, api_key: str | None, user_signature: str | None) -> None:
        self.headers = {k: v for k, v in {"X-API-Key": api_key, "X-User-Signature": user_signature}.items() if v}


class RecsysClient(_Base):
    """The synchronous client (``with RecsysClient(url, api_key=...) as api: api.placement("home", user_id=...)``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        user_signature: str | None = None,
        timeout: float = 2.0,
        attempts: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, user_signature)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=self.headers, transport=transport)
        self.retrying = Retrying(
            retry=retry_if_exception(_retryable), stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True,
        )  # fmt: skip

    def _send(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        for attempt in self.retrying:
            with attempt:
                return _checked(self.http.request(method, path, params=query, json=body))
        raise AssertionError("unreachable")  # pragma: no cover

    def recommendations(self, user_id: str, n: int = 10, **options: Any) -> Listing:
        """A user's list (the ``home`` placement)."""
        return _listing(self._send(*_Requests.recommendations(user_id, n, **options)))

    def placement(self, name: str, **options: Any) -> Listing:
        """One placement's list (``user_id``, ``item_id``, ``cart``, ``n``, ``cursor``, ``paginate``, ...)."""
        return _listing(self._send(*_Requests.placement(name, **options)))

    def similar(self, item_id: str, n: int = 10, details: bool = False) -> Listing:
        """Items similar to one item."""
        return _listing(self._send(*_Requests.similar(item_id, n, details)))

    def popular(self, n: int = 10, category: str | None = None, details: bool = False) -> Listing:
        """Popular items."""
        return _listing(self._send(*_Requests.popular(n, category, details)))

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Post events (events role); returns how many were accepted."""
        return int(self._send("POST", "/v1/events", body=list(events))["accepted"])

    def update_item(self, item_id: str, **fields: Any) -> int:
        """Change an item's ``in_stock``, ``hidden``, ``price``, ``category`` or ``title`` now (write role)."""
        return int(self._send("PATCH", f"/v1/items/{item_id}", body=fields)["changed"])

    def update_items(self, changes: Sequence[Mapping[str, Any]]) -> int:
        """Change many items (``[{"item_id": ..., "in_stock": false}, ...]``) in one transaction."""
        return int(self._send("POST", "/v1/items:batch", body=list(changes))["changed"])

    def put_rules(self, placement: str, rules: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a placement's rules (admin role); :class:`RecsysError` 422 lists each bad rule."""
        return dict(self._send("PUT", f"/v1/rules/{placement}", body=dict(rules)))

    def get_rules(self, placement: str) -> dict[str, Any]:
        """A placement's rules in force."""
        return dict(self._send("GET", f"/v1/rules/{placement}"))

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncRecsysClient(_Base):
    """The asyncio client, with the same methods as :class:`RecsysClient` (awaited)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        user_signature: str | None = None,
        timeout: float = 2.0,
        attempts: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, user_signature)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=self.headers, transport=transport)
        self.retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable), stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0), reraise=True,
        )  # fmt: skip

    async def _send(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None) -> Any:
        async for attempt in self.retrying:
            with attempt:
                return _checked(await self.http.request(method, path, params=query, json=body))
        raise AssertionError("unreachable")  # pragma: no cover

    async def recommendations(self, user_id: str, n: int = 10, **options: Any) -> Listing:
        """A user's list (the ``home`` placement)."""
        return _listing(await self._send(*_Requests.recommendations(user_id, n, **options)))

    async def placement(self, name: str, **options: Any) -> Listing:
        """One placement's list."""
        return _listing(await self._send(*_Requests.placement(name, **options)))

    async def similar(self, item_id: str, n: int = 10, details: bool = False) -> Listing:
        """Items similar to one item."""
        return _listing(await self._send(*_Requests.similar(item_id, n, details)))

    async def popular(self, n: int = 10, category: str | None = None, details: bool = False) -> Listing:
        """Popular items."""
        return _listing(await self._send(*_Requests.popular(n, category, details)))

    async def send_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Post events; returns how many were accepted."""
        return int((await self._send("POST", "/v1/events", body=list(events)))["accepted"])

    async def update_item(self, item_id: str, **fields: Any) -> int:
        """Change an item's fields now (write role)."""
        return int((await self._send("PATCH", f"/v1/items/{item_id}", body=fields))["changed"])

    async def update_items(self, changes: Sequence[Mapping[str, Any]]) -> int:
        """Change many items in one transaction."""
        return int((await self._send("POST", "/v1/items:batch", body=list(changes)))["changed"])

    async def put_rules(self, placement: str, rules: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a placement's rules (admin role)."""
        return dict(await self._send("PUT", f"/v1/rules/{placement}", body=dict(rules)))

    async def get_rules(self, placement: str) -> dict[str, Any]:
        """A placement's rules in force."""
        return dict(await self._send("GET", f"/v1/rules/{placement}"))

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()
