"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response, status

from recommender.online.service import RedisUnavailableError
from serving.deps import ServiceDep
from serving.schemas import Ready
from serving.telemetry import EVENT_BACKLOG, render_metrics, set_model_version

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}})
async def readyz(service: ServiceDep, response: Response) -> Ready:
    """Redis reachable and an active version present (503 otherwise)."""
    state = await service.ready()
    set_model_version(state.get("model_version"))
    if not state["ready"]:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Ready(**state)


@router.get("/metrics", include_in_schema=False)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus exposition (aggregated across workers in multiprocess mode), with the event backlog read now."""
    with contextlib.suppress(RedisUnavailableError):  # Redis away: the last value stands, the fallback alert fires
        EVENT_BACKLOG.set(await service.event_backlog())
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
