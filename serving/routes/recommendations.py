"""GET /v1/users/{user_id}/recommendations."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.routing import Route

from recommender.online.service import RecommendationService
from serving.deps import USER_SIGNATURE, authorize, check_user_signature
from serving.params import OPENAPI_PARAMETERS, check_id, parse_list_query
from serving.schemas import FastJSON, Problem, Recommendations
from serving.telemetry import count_source

PATH = "/v1/users/{user_id}/recommendations"
router = APIRouter(tags=["recommendations"])


@router.get(  # documents the route (OpenAPI, /docs); requests are served through ``route`` below
    PATH,
    response_model=Recommendations,
    openapi_extra={"parameters": OPENAPI_PARAMETERS},
    responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": Problem}},
)
async def user_recommendations(request: Request) -> FastJSON:
    """Top-n items for a user: personalized, popular for unknown users, fallback when Redis is down."""
    service: RecommendationService = request.app.state.service
    user_id: str = request.path_params["user_id"]  # read by hand like the query: no per-request param solving
    role = authorize(service.settings, request.headers.get("x-api-key"), "read")
    check_id("user_id", user_id, "path")
    check_user_signature(service.settings, role, {user_id}, request.headers.get(USER_SIGNATURE))
    q = parse_list_query(request.query_params, service.settings.max_n)
    found = await service.recommendations(user_id, q.n, q.exclude, q.category, q.details)
    count_source(found.source)
    return FastJSON({"user_id": user_id, **found.__dict__})


route = Route(PATH, user_recommendations, methods=["GET"])
"""The hot route as a plain Starlette route, placed first: the handler reads its parameters itself,
so FastAPI's per-request dependency solving would be pure overhead (+29% throughput without it,
docs/benchmarks.md). The app's middleware and exception handlers apply as to any route."""
