"""GET /v1/admin/overview: what the operator's console shows (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from serving.deps import AdminAccess, ServiceDep
from serving.schemas import Problem

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[AdminAccess],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 503: {"model": Problem}},
)


@router.get("/overview")
async def overview(service: ServiceDep) -> dict[str, Any]:
    """The served version and the challenger, each placement's rules in force, the last experiment report and the
    last export of each placement."""
    return await service.overview()
