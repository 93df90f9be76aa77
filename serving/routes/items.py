"""GET /v1/items/{item_id}/similar and GET /v1/popular."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from serving.deps import ReadAccess, ServiceDep, SettingsDep
from serving.params import ID_PATTERN, Category, Details, N
from serving.schemas import FastJSON, ItemList
from serving.telemetry import count_source

router = APIRouter(prefix="/v1", tags=["items"], dependencies=[ReadAccess])


@router.get("/items/{item_id}/similar", response_model=ItemList)
async def similar_items(
    item_id: Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN)],
    service: ServiceDep,
    settings: SettingsDep,
    n: N = 10,
    details: Details = False,
) -> FastJSON:
    """Items most similar to one item (empty for an unknown item)."""
    found = await service.similar(item_id, min(n, settings.max_n), details)
    count_source(found.source)
    return FastJSON(found.__dict__)


@router.get("/popular", response_model=ItemList)
async def popular_items(
    service: ServiceDep, settings: SettingsDep, n: N = 10, category: Category = None, details: Details = False
) -> FastJSON:
    """Popular items, overall or within a category."""
    found = await service.popular(min(n, settings.max_n), category, details)
    count_source(found.source)
    return FastJSON(found.__dict__)
