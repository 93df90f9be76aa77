"""GET /v1/audiences: the users most likely to engage with an item, a category or an attribute value (write)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from recommender.online.audiences import AudienceError, Target, TooManyAudiencesError
from serving.deps import ServiceDep, WriteAccess
from serving.params import ID_PATTERN
from serving.schemas import AudienceMember, AudienceOut, Problem

router = APIRouter(
    prefix="/v1",
    tags=["audiences"],
    dependencies=[WriteAccess],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}},
)
PENDING = (
    "computed for the served model version by the refresh_audiences DAG (every 10 minutes, and after each "
    "publish) or `recsys audience --refresh`: ask again then"
)


@router.get(
    "/audiences",
    response_model=AudienceOut,
    responses={
        202: {"model": AudienceOut, "description": "Not computed yet: kept, and computed by the next audience job."},
        404: {"model": Problem},
        409: {"model": Problem},
        422: {"model": Problem},
    },
)
async def audience(
    service: ServiceDep,
    response: Response,
    item: Annotated[str | None, Query(min_length=1, max_length=256, pattern=ID_PATTERN)] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=256, pattern=ID_PATTERN)] = None,
    attribute: Annotated[
        str | None, Query(min_length=3, max_length=512, pattern=r"^[^\x00-\x1f\x7f=]+=[^\x00-\x1f\x7f]+$")
    ] = None,
    top: Annotated[int, Query(ge=1, le=10_000, description="Users to return, best first.")] = 100,
) -> AudienceOut:
    """The ``top`` users the served model scores highest for one target (``item``, ``category`` or ``attribute``
    ``KEY=VALUE``), as pseudonyms, users who already had the target's items left out. The first request for a
    target answers 202 *pending*: the API holds no model, so the audience job computes it, and keeps it current
    with each new model version while someone asks for it."""
    try:
        key_value = tuple(attribute.split("=", 1)) if attribute is not None else None
        target = Target(item, category, key_value)  # type: ignore[arg-type]
        answer = await service.audience(target, top)
    except AudienceError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    except TooManyAudiencesError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    stored = answer.stored
    if answer.status == "failed":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{answer.target}: {stored.error if stored else ''}")
    if answer.status == "pending":
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Retry-After"] = "600"
        return AudienceOut(target=answer.target, status="pending", detail=PENDING)
    assert stored is not None and answer.users is not None
    return AudienceOut(
        target=answer.target,
        status="ready",
        model_version=stored.model_version,
        family=stored.family,
        items=stored.items,
        computed_at=stored.computed_at,
        users=[AudienceMember(user_id=u, score=s) for u, s in answer.users],
    )
