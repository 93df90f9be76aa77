"""GET /v1/users/{user_id}/recommendations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serving.deps import ShopServiceDep
from serving.schemas import FastJSON, Recommendations
from serving.telemetry import count_source

router = APIRouter(prefix="/v1", tags=["recommendations"])

UserId = Annotated[str, Path(min_length=1, max_length=256, description="Raw user id; hashed as at ingest.")]
N = Annotated[int, Query(ge=1, le=1000, description="How many items (capped by RECSYS_MAX_N).")]
Exclude = Annotated[str | None, Query(max_length=20_000, description="Comma-separated item ids to leave out.")]
Category = Annotated[str | None, Query(max_length=256, description="Only items of this catalog category.")]
Details = Annotated[bool, Query(description="Add catalog fields (title, category, price, in_stock).")]


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def user_recommendations(
    user_id: UserId,
    service: ShopServiceDep,
    n: N = 10,
    exclude: Exclude = None,
    category: Category = None,
    details: Details = False,
) -> FastJSON:
    """Top-n items for a user: personalized, popular for unknown users, fallback when Redis is down."""
    found = await service.recommendations(user_id, min(n, service.settings.max_n), exclude, category, details)
    count_source(found.source)
    return FastJSON({"user_id": user_id, **found.__dict__})
