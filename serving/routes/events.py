"""POST /v1/events."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from recommender.service import InvalidEventsError, RedisUnavailableError
from serving.deps import ReadAccess, ServiceDep
from serving.schemas import Accepted, EventIn, Problem

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[ReadAccess])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={422: {"model": Problem}, 503: {"model": Problem}},
)
async def post_events(body: EventIn | list[EventIn], service: ServiceDep) -> Accepted:
    """Accept one event or a batch: all valid ones are appended to the events stream, or none (422)."""
    events = [e.model_dump() for e in (body if isinstance(body, list) else [body])]
    try:
        return Accepted(accepted=await service.accept_events(events))
    except InvalidEventsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.errors) from exc
    except RedisUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "event stream unavailable; retry later") from exc
