"""GET /v1/placements/{name}: one placement's list (home, product, cart, recently_viewed, ...)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from starlette.routing import Route

from recommender.online.placements import PLACEMENT_NAME
from recommender.online.service import RecommendationService
from serving.deps import USER_SIGNATURE, ReadRole, authorize, check_user_signature
from serving.params import ID_PATTERN, MAX_EXCLUDE_CHARS, MAX_TEXT, Category, Details, N, invalid, parse_placement_query
from serving.schemas import FastJSON, PlacementList, Problem
from serving.telemetry import count_source

PATH = "/v1/placements/{name}"
router = APIRouter(prefix="/v1", tags=["placements"])
Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT, pattern=ID_PATTERN)]


@router.get(  # documents the route (OpenAPI, /docs); requests are served through ``route`` below
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
    name: Annotated[str, Path(pattern=PLACEMENT_NAME)],
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
    return await serve(request)


async def serve(request: Request) -> FastJSON:
    """The route's handler: parameters checked by hand (no per-request dependency solving), as documented above."""
    service: RecommendationService = request.app.state.service
    role = authorize(service.settings, request.headers.get("x-api-key"), "read")  # first, as FastAPI's route did
    name: str = request.path_params["name"]
    if not re.fullmatch(PLACEMENT_NAME, name):
        raise invalid("name", f"placement name must match {PLACEMENT_NAME}", name[:50], "path")
    signature = request.headers.get(USER_SIGNATURE)
    if signature is not None and len(signature) > 128:
        raise invalid("X-User-Signature", "X-User-Signature is longer than 128 characters", signature[:50], "header")
    query = parse_placement_query(request.query_params, request.client.host if request.client else None)
    if query.user_id is not None:
        check_user_signature(service.settings, role, {query.user_id}, signature)
    found = await service.placement(name, query)
    count_source(found.source)
    return FastJSON(found.__dict__)


route = Route(PATH, serve, methods=["GET"])
"""The route as a plain Starlette route, placed first, like the users route (serving/routes/recommendations.py)."""
