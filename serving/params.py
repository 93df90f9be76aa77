"""Hand-checked query parameters for the hot route (FastAPI's per-parameter machinery was a
quarter of its CPU time under load). Errors look like FastAPI's own 422s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import HTTPException, Query, status
from starlette.datastructures import QueryParams

from recommender.online.service import PlacementQuery, csv_ids

N = Annotated[int, Query(ge=1, le=1000, description="How many items (capped by RECSYS_MAX_N).")]
Category = Annotated[str | None, Query(max_length=256, description="Only items of this catalog category.")]
Details = Annotated[bool, Query(description="Add catalog fields (title, category, price, in_stock).")]

TRUE = {"1", "true", "yes", "on", "t", "y"}
FALSE = {"0", "false", "no", "off", "f", "n"}
MAX_EXCLUDE_CHARS = 20_000
MAX_TEXT = 256
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""A user or item id: 1 to 256 characters of any script, none of U+0000-U+001F or U+007F (as ingest checks them)."""
_ID = re.compile(r"[^\x00-\x1f\x7f]+")  # fullmatch: a ``$`` would let a trailing newline through
WHOLE = re.compile(r"\s*\+?[0-9]{1,9}\s*")
"""A whole number as the query may carry it (ASCII digits only: ``str.isdigit`` takes "²", which ``int`` refuses)."""


@dataclass(frozen=True)
class ListQuery:
    """``n``, ``exclude``, ``category`` and ``details`` of a list request."""

    n: int = 10
    exclude: str | None = None
    category: str | None = None
    details: bool = False


def invalid(name: str, message: str, value: Any, where: str = "query") -> HTTPException:
    """A 422 shaped like FastAPI's own (``where``: query, path or header)."""
    detail = [{"type": "invalid", "loc": [where, name], "msg": message, "input": value}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _text(params: QueryParams, name: str, limit: int) -> str | None:
    """An optional text parameter of 1 to ``limit`` characters (422 otherwise)."""
    value = params.get(name)
    if value is not None and not 1 <= len(value) <= limit:
        raise invalid(name, f"{name} must be 1 to {limit} characters", value[:50])
    return value


def check_id(name: str, value: str | None, where: str = "query") -> str | None:
    """``value`` if it is an id (:data:`ID_PATTERN`, at most :data:`MAX_TEXT` characters); 422 otherwise."""
    if value is not None and (len(value) > MAX_TEXT or not _ID.fullmatch(value)):
        raise invalid(name, f"{name} must be 1 to {MAX_TEXT} characters without control characters", value[:50], where)
    return value


def _whole(params: QueryParams, name: str, low: int, high: int) -> int | None:
    """An optional whole number from ``low`` to ``high`` (422 otherwise)."""
    value = params.get(name)
    if value is None:
        return None
    if not WHOLE.fullmatch(value) or not low <= int(value) <= high:
        raise invalid(name, f"{name} must be a whole number from {low} to {high}", value[:50])
    return int(value)


def _flag(params: QueryParams, name: str) -> bool:
    """An optional true/false parameter (false when absent; 422 on anything else)."""
    value = (params.get(name) or "").strip().lower() if name in params else "false"
    if value not in TRUE | FALSE:
        raise invalid(name, f"{name} must be true or false", value[:50])
    return value in TRUE


def parse_list_query(params: QueryParams, max_n: int) -> ListQuery:
    """Validate the query string (422 on anything out of bounds); ``n`` is capped at ``max_n``."""
    exclude = params.get("exclude")
    if exclude is not None and len(exclude) > MAX_EXCLUDE_CHARS:
        raise invalid("exclude", f"exclude is longer than {MAX_EXCLUDE_CHARS} characters", exclude[:50])
    category = params.get("category")
    if category is not None and len(category) > MAX_TEXT:
        raise invalid("category", f"category is longer than {MAX_TEXT} characters", category[:50])
    n = _whole(params, "n", 1, 1000)
    return ListQuery(min(10 if n is None else n, max_n), exclude, category or None, _flag(params, "details"))


def parse_placement_query(params: QueryParams, client: str | None) -> PlacementQuery:
    """The checks :func:`serving.routes.placements.placement` documents, by hand (422 on anything out of bounds)."""
    listed = parse_list_query(params, 1000)
    cart = params.get("cart")
    if cart is not None and len(cart) > MAX_EXCLUDE_CHARS:
        raise invalid("cart", f"cart is longer than {MAX_EXCLUDE_CHARS} characters", cart[:50])
    return PlacementQuery(
        user_id=check_id("user_id", _text(params, "user_id", MAX_TEXT)),
        item_id=check_id("item_id", _text(params, "item_id", MAX_TEXT)),
        cart=csv_ids(cart),
        n=listed.n if "n" in params else None,
        exclude=frozenset(csv_ids(listed.exclude, 1000)),
        category=listed.category,
        details=listed.details,
        max_per_category=_whole(params, "max_per_category", 1, 1000),
        cursor=_text(params, "cursor", 64),
        paginate=_flag(params, "paginate"),
        client=client,
    )


OPENAPI_PARAMETERS: list[dict[str, Any]] = [  # the hot route's parameters, documented by hand
    {
        "name": "user_id",
        "in": "path",
        "required": True,
        "description": "Raw user id; hashed as at ingest.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": ID_PATTERN},
    },
    {
        "name": "n",
        "in": "query",
        "description": "How many items (capped by RECSYS_MAX_N).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
    },
    {
        "name": "exclude",
        "in": "query",
        "description": "Comma-separated item ids to leave out.",
        "schema": {"type": "string", "maxLength": MAX_EXCLUDE_CHARS},
    },
    {
        "name": "category",
        "in": "query",
        "description": "Only items of this catalog category.",
        "schema": {"type": "string", "maxLength": MAX_TEXT},
    },
    {
        "name": "details",
        "in": "query",
        "description": "Add catalog fields (title, category, price, in_stock).",
        "schema": {"type": "boolean", "default": False},
    },
    {
        "name": "X-API-Key",
        "in": "header",
        "required": False,
        "description": "API key (see RECSYS_API_KEYS).",
        "schema": {"type": "string"},
    },
    {
        "name": "X-User-Signature",
        "in": "header",
        "required": False,
        "description": "The shop's HMAC of user_id (needed below the write role when RECSYS_REQUIRE_USER_SIGNATURE).",
        "schema": {"type": "string", "maxLength": 128},
    },
]
