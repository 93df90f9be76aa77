"""PUT / GET /v1/rules/{placement} and its history: merchandising rules (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, Security, status

from recommender.online.rules import RulesError, parse_rules
from serving.deps import AdminAccess, ServiceDep, SettingsDep, api_key_header, key_of
from serving.schemas import Problem, RulesEntry

router = APIRouter(
    prefix="/v1",
    tags=["rules"],
    dependencies=[AdminAccess],
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}},
)
Placement = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="A placement of the config.")]
EXAMPLE = {
    "rules": [
        {"kind": "filter", "where": [{"field": "brand", "op": "ne", "value": "acme"}]},
        {"kind": "boost", "where": [{"field": "category", "op": "in", "value": ["shoes"]}], "factor": 1.5},
        {"kind": "pin", "item_id": "i42", "position": 1, "end": "2026-12-24T00:00:00Z"},
        {"kind": "promote", "where": [{"field": "price", "op": "lte", "value": 20}], "share": 0.2},
    ],
    "diversity": {"max_per_category": 3},
}


@router.put("/rules/{placement}", response_model=RulesEntry, responses={422: {"model": Problem}})
async def put_rules(
    placement: Placement,
    service: ServiceDep,
    settings: SettingsDep,
    body: Annotated[dict[str, Any], Body(openapi_examples={"rules": {"value": EXAMPLE}})],
    key: Annotated[str | None, Security(api_key_header)] = None,
) -> RulesEntry:
    """Replace a placement's rules (422 with one reason per bad rule); kept in its history."""
    try:
        rules = parse_rules(body)
    except RulesError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.errors) from exc
    found = key_of(key, settings)
    return RulesEntry(**await service.put_rules(placement, rules, found.name if found else "anonymous"))


@router.get("/rules/{placement}", response_model=RulesEntry)
async def get_rules(placement: Placement, service: ServiceDep) -> RulesEntry:
    """A placement's rules in force."""
    return RulesEntry(**await service.rules(placement))


@router.get("/rules/{placement}/history", response_model=list[RulesEntry])
async def rules_history(
    placement: Placement, service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RulesEntry]:
    """A placement's past rule sets, newest first."""
    return [RulesEntry(**entry) for entry in await service.rules_history(placement, limit)]
