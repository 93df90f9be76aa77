"""PATCH /v1/items/{item_id} and POST /v1/items:batch: the live catalog (write role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, status

from serving.deps import ServiceDep, WriteAccess
from serving.params import ID_PATTERN
from serving.schemas import ItemBatchEntry, ItemPatch, ItemsChanged, Problem

router = APIRouter(
    prefix="/v1",
    tags=["catalog"],
    dependencies=[WriteAccess],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
)
MAX_BATCH = 1000


@router.patch("/items/{item_id}", response_model=ItemsChanged)
async def patch_item(
    item_id: Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN)],
    change: ItemPatch,
    service: ServiceDep,
) -> ItemsChanged:
    """Change an item's stock, visibility, price, category or title; served from the next request on."""
    fields = change.fields()
    if not fields:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "name at least one field to change")
    return ItemsChanged(changed=await service.change_items({item_id: fields}))


@router.post("/items:batch", response_model=ItemsChanged)
async def patch_items(
    changes: Annotated[list[ItemBatchEntry], Body(min_length=1, max_length=MAX_BATCH)], service: ServiceDep
) -> ItemsChanged:
    """Change many items in one transaction (the last entry of an item wins)."""
    merged: dict[str, dict[str, object]] = {}
    for entry in changes:
        merged.setdefault(entry.item_id, {}).update(entry.fields())
    return ItemsChanged(changed=await service.change_items(merged))
