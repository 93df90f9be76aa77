"""POST /v1/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, status

from recommender.online.service import BacklogFullError, InvalidEventsError, RedisUnavailableError
from serving.deps import RoleDep, ServiceDep, check_user_signature
from serving.schemas import Accepted, EventIn, Problem

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        422: {"model": Problem},
        429: {"model": Problem},
        503: {"model": Problem},
    },
)
async def post_events(
    request: Request,
    body: EventIn | list[EventIn],
    service: ServiceDep,
    role: RoleDep,
    signature: Annotated[str | None, Header(alias="X-User-Signature", max_length=128)] = None,
) -> Accepted:
    """Accept one event or a batch (events role): all valid ones are appended to the events stream, or none (422)."""
    events = [e.model_dump() for e in (body if isinstance(body, list) else [body])]
    check_user_signature(service.settings, role, {e["user_id"] for e in events}, signature)
    client = request.client.host if request.client else None
    wait = request.app.state.limiter.events(role, client, len(events))
    if wait is not None:
        detail = f"too many events from this address: retry after {wait} s (RECSYS_CLIENT_EVENT_LIMIT)"
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail, headers={"Retry-After": str(wait)})
    try:
        return Accepted(accepted=await service.accept_events(events, role))
    except InvalidEventsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.errors) from exc
    except RedisUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "event stream unavailable; retry later") from exc
    except BacklogFullError as exc:
        detail = f"{exc}; nothing was accepted: retry after the next drain"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "60"}) from exc
