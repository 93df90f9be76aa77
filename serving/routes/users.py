"""DELETE /v1/users/{user_id}: the right to be forgotten (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Path, status

from serving.deps import AdminAccess, ServiceDep
from serving.params import ID_PATTERN
from serving.schemas import Forgotten, Problem

router = APIRouter(prefix="/v1", tags=["privacy"], dependencies=[AdminAccess])


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Forgotten,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}},
)
async def forget_user(
    service: ServiceDep,
    user_id: str = Path(min_length=1, max_length=256, pattern=ID_PATTERN, description="Raw user id."),
) -> Forgotten:
    """Remove the user's recommendations and pending events from Redis now; the store follows (forget_user DAG)."""
    report = await service.forget(user_id)  # Redis down: 503 from the app's handler
    return Forgotten(
        redis_lists=report.redis_lists,
        stream_entries=report.stream_entries,
        store="queued: the forget_user DAG deletes the stored events and purges old snapshots",
    )
