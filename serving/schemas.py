"""Response and request models (they drive the OpenAPI docs at /docs)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from recommender.data.reasons import Kind
from recommender.online.live import ItemChange


class FastJSON(JSONResponse):
    """JSON via orjson, returned as is: the hot routes skip re-validating what the service built.

    The routes still declare their ``response_model`` for the OpenAPI docs, and the tests check
    the bodies against those models.
    """

    def render(self, content: Any) -> bytes:
        """Serialize with orjson."""
        return orjson.dumps(content)


class Reason(BaseModel):
    """Why an item is shown: its kind, and the item behind it where one is (with its title when ``details=true``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"kind": "similar_to", "item_id": "i7"}]})

    kind: Kind = Field(
        description="similar_to (a past item, or the page's item), session, bought_together, buy_again, popular, new, "
        "explore, pinned, promoted"
    )
    item_id: str | None = None
    title: str | None = None


class ItemScore(BaseModel):
    """One recommended item with its reason; catalog fields appear with ``details=true``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"item_id": "i42", "score": 0.83, "reason": {"kind": "similar_to", "item_id": "i7"}}]
        },
    )

    item_id: str
    score: float
    reason: Reason | None = Field(default=None, description="Always present unless RECSYS_REASONS=false.")


class Recommendations(BaseModel):
    """A user's list."""

    user_id: str
    items: list[ItemScore]
    source: Literal["personalized", "popular", "fallback", "session"]
    model_version: str | None
    recommendation_id: str
    cursor: str | None = None


class PlacementList(BaseModel):
    """One placement's list; ``cursor`` (with ``paginate`` or ``cursor``) fetches the next page."""

    items: list[ItemScore]
    source: Literal["personalized", "popular", "fallback", "session", "similar", "together", "buy_again", "new"]
    model_version: str | None
    recommendation_id: str
    cursor: str | None = None


class ItemList(BaseModel):
    """Similar or popular items."""

    items: list[ItemScore]
    source: Literal["similar", "popular", "fallback"]
    model_version: str | None
    recommendation_id: str
    cursor: str | None = None


class ItemPatch(ItemChange):
    """Catalog fields to change now (the others stay)."""


class ItemBatchEntry(ItemChange):
    """One item's changes in a batch."""

    item_id: str = Field(min_length=1, max_length=256)


class ItemsChanged(BaseModel):
    """How many items changed (they are live on the next request)."""

    changed: int


class RulesEntry(BaseModel):
    """A placement's rule set, when it was set and by which key (``by: config`` for the config's)."""

    rules: dict[str, Any]
    at: str | None
    by: str


class EventIn(BaseModel):
    """A shop event in the canonical schema (validated like ingest; raw user ids are hashed)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "u1", "item_id": "i42", "event_type": "view", "timestamp": "2026-11-26T10:00:00Z"},
                {
                    "user_id": "u1",
                    "item_id": "i42",
                    "event_type": "add_to_cart",
                    "timestamp": 1795687200,
                    "quantity": 1,
                    "price": 19.9,
                    "recommendation_id": "3f2a...",
                },
            ]
        },
    )

    user_id: str = Field(max_length=256)
    item_id: str = Field(max_length=256)
    event_type: str = Field(max_length=64)
    timestamp: str | float = Field(description="ISO-8601 or unix seconds")
    event_id: str | None = Field(default=None, max_length=256)
    session_id: str | None = Field(default=None, max_length=256)
    quantity: int | None = None
    price: float | None = None
    recommendation_id: str | None = Field(default=None, max_length=256)


class Accepted(BaseModel):
    """How many events were appended to the stream."""

    accepted: int


class AudienceMember(BaseModel):
    """One user of an audience: the pseudonym (the shop computes it from its own id with the HMAC secret)."""

    user_id: str
    score: float


class AudienceOut(BaseModel):
    """An audience of the served model version, or why there is none yet."""

    target: str = Field(examples=["item:i42"])
    status: Literal["ready", "pending", "failed"]
    model_version: str | None = None
    family: str | None = None
    items: int | None = Field(default=None, description="The target's items the model knows.")
    computed_at: float | None = Field(default=None, description="Unix time the audience job computed it.")
    users: list[AudienceMember] = []
    detail: str | None = Field(default=None, description="What happens next (pending) or why it failed.")


class Forgotten(BaseModel):
    """What left Redis at once, and what happens to the stored data."""

    redis_lists: int
    stream_entries: int
    store: str


class Ready(BaseModel):
    """Readiness detail."""

    model_config = ConfigDict(extra="allow")

    ready: bool
    redis: str


class Problem(BaseModel):
    """An error."""

    detail: Any
