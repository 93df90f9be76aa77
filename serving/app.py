"""The recommendation API: ``create_app`` only assembles; the logic is in ``recommender.online.service``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from recommender.config import Settings, get_settings
from recommender.online.redis_conn import async_client, server_url
from recommender.online.service import (
    CursorError,
    CursorUnavailableError,
    PlacementQueryError,
    RecommendationService,
    RedisUnavailableError,
    UnknownPlacementError,
)
from serving.limits import BodyLimitMiddleware, RateLimiter, RateLimitMiddleware
from serving.routes import admin, audiences, catalog, events, health, items, placements, recommendations, rules, users
from serving.telemetry import MetricsMiddleware, set_health, set_model_version

STATIC = Path(__file__).with_name("static")
SHOP_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The reference shop page runs only its own files: no inline script, no script from elsewhere, no framing."""


class ShopFiles(StaticFiles):
    """The shop page's files, each with :data:`SHOP_HEADERS`."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SHOP_HEADERS)
        return response


def _gauges(service: RecommendationService) -> Callable[[], None]:
    """What the service's upkeep records after each round: the served version and the worker's health."""

    def tick() -> None:
        set_model_version(service.fallback.model_version)
        set_health(service.fallback_seconds(), service.live_age())

    return tick


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app (``uvicorn --factory serving.app:create_app``)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = async_client(settings, server_url(settings))
        service = app.state.service = RecommendationService(redis, settings)
        with contextlib.suppress(RedisUnavailableError):  # Redis away at start: the upkeep loads it later
            await service.reload_live()
        gc.freeze()  # the startup objects (modules, routes, schemas) leave the collector's scans: shorter pauses
        # Shutdown sets the event instead of cancelling the task: a cancellation that lands inside a Redis
        # call in flight can be swallowed by the client, and the task then sleeps on (shutdown waited 5 s).
        stop = asyncio.Event()
        upkeep = app.state.upkeep = asyncio.create_task(service.maintain(stop, _gauges(service)))
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait([upkeep], timeout=5)  # a round in flight ends within its Redis timeouts
            await redis.aclose()

    app = FastAPI(
        title="recsys recommendation API",
        version="1",
        description="Precomputed recommendations from Redis. Send `X-API-Key` unless reads are open.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limiter=app.state.limiter)  # before a body is read
    app.add_middleware(MetricsMiddleware)  # added last: outermost, so it counts the 413s and 429s too
    for module in (recommendations, placements, items, catalog, rules, events, users, audiences, health, admin):
        app.include_router(module.router)
    app.router.routes[:0] = [recommendations.route, placements.route]  # matched before the documenting FastAPI routes

    @app.exception_handler(RedisUnavailableError)
    async def redis_down(request: Request, exc: RedisUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": "Redis unavailable; retry later"}, status_code=503)

    @app.exception_handler(UnknownPlacementError)
    async def unknown_placement(request: Request, exc: UnknownPlacementError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(CursorError)
    async def cursor_gone(request: Request, exc: CursorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=410)

    @app.exception_handler(CursorUnavailableError)
    async def cursor_unavailable(request: Request, exc: CursorUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(PlacementQueryError)
    async def bad_placement_query(request: Request, exc: PlacementQueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app.mount("/shop", ShopFiles(directory=STATIC, html=True), name="shop")
    app.mount("/console", ShopFiles(directory=STATIC / "console", html=True), name="console")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/shop/")

    return app
