"""GET /v1/placements/{name}: one placement's list (home, product, cart, recently_viewed, ...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request

from recommender.online.service import PlacementQuery
from serving.deps import ReadRole, ServiceDep, check_user_signature
from serving.params import MAX_EXCLUDE_CHARS, MAX_TEXT, Category, Details, N
from serving.schemas import FastJSON, PlacementList, Problem
from serving.telemetry import count_source

router = APIRouter(prefix="/v1", tags=["placements"])
Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)]


def _ids(text: str | None, limit: int = 100) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in (text or "").split(",") if v.strip()))[:limit]


@router.get(
    "/placements/{name}",
    response_model=PlacementList,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem},
        410: {"model": Problem, "description": "The cursor expired or is unknown: start again with paginate=true."},
        422: {"model": Problem},
        503: {"model": Problem, "description": "Redis is away and a cursor's next page cannot be told apart."},
    },
)
async def placement(
    request: Request,
    name: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,31}$")],
    service: ServiceDep,
    role: ReadRole,
    user_id: Text = None,
    item_id: Text = None,
    cart: Annotated[str | None, Query(max_length=MAX_EXCLUDE_CHARS, description="Comma-separated item ids.")] = None,
    n: N | None = None,
    exclude: Annotated[str | None, Query(max_length=MAX_EXCLUDE_CHARS)] = None,
    category: Category = None,
    details: Details = False,
    max_per_category: Annotated[int | None, Query(ge=1, le=1000, description="At most this many per category.")] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="From the previous page.")] = None,
    paginate: Annotated[bool, Query(description="Start a cursor: later pages never repeat items.")] = False,
    signature: Annotated[str | None, Header(alias="X-User-Signature", max_length=128)] = None,
) -> FastJSON:
    """A placement's list under its rules; the placement is part of the ``recommendation_id``."""
    if user_id is not None:
        check_user_signature(service.settings, role, {user_id}, signature)
    query = PlacementQuery(
        user_id=user_id,
        item_id=item_id,
        cart=_ids(cart),
        n=n,
        exclude=frozenset(_ids(exclude, 1000)),
        category=category,
        details=details,
        max_per_category=max_per_category,
        cursor=cursor,
        paginate=paginate,
        client=request.client.host if request.client else None,
    )
    found = await service.placement(name, query)
    count_source(found.source)
    return FastJSON(found.__dict__)
