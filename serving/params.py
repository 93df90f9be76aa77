"""Hand-checked query parameters for the hot route (FastAPI's per-parameter machinery was a
quarter of its CPU time under load). Errors look like FastAPI's own 422s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import HTTPException, Query, status
from starlette.datastructures import QueryParams

N = Annotated[int, Query(ge=1, le=1000, description="How many items (capped by RECSYS_MAX_N).")]
Category = Annotated[str | None, Query(max_length=256, description="Only items of this catalog category.")]
Details = Annotated[bool, Query(description="Add catalog fields (title, category, price, in_stock).")]

TRUE = {"1", "true", "yes", "on", "t", "y"}
FALSE = {"0", "false", "no", "off", "f", "n"}
MAX_EXCLUDE_CHARS = 20_000
MAX_TEXT = 256


@dataclass(frozen=True)
class ListQuery:
    """``n``, ``exclude``, ``category`` and ``details`` of a list request."""

    n: int = 10
    exclude: str | None = None
    category: str | None = None
    details: bool = False


def _invalid(name: str, message: str, value: Any) -> HTTPException:
    detail = [{"type": "invalid", "loc": ["query", name], "msg": message, "input": value}]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def parse_list_query(params: QueryParams, max_n: int) -> ListQuery:
    """Validate the query string (422 on anything out of bounds); ``n`` is capped at ``max_n``."""
    raw_n = params.get("n")
    n = 10
    if raw_n is not None:
        if not raw_n.strip().lstrip("+").isdigit() or not 1 <= int(raw_n) <= 1000:
            raise _invalid("n", "n must be a whole number from 1 to 1000", raw_n)
        n = int(raw_n)
    exclude, category = params.get("exclude"), params.get("category")
    if exclude is not None and len(exclude) > MAX_EXCLUDE_CHARS:
        raise _invalid("exclude", f"exclude is longer than {MAX_EXCLUDE_CHARS} characters", exclude[:50])
    if category is not None and len(category) > MAX_TEXT:
        raise _invalid("category", f"category is longer than {MAX_TEXT} characters", category[:50])
    raw_details = (params.get("details") or "false").strip().lower()
    if raw_details not in TRUE | FALSE:
        raise _invalid("details", "details must be true or false", raw_details)
    return ListQuery(min(n, max_n), exclude, category or None, raw_details in TRUE)


OPENAPI_PARAMETERS: list[dict[str, Any]] = [  # the hot route's parameters, documented by hand
    {
        "name": "user_id",
        "in": "path",
        "required": True,
        "description": "Raw user id; hashed as at ingest.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
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
