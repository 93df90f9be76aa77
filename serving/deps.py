"""Dependencies shared by the routes: settings, the service, and API-key auth.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
more than the work they do.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from recommender.config import Settings
from recommender.service import RecommendationService

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (see RECSYS_API_KEYS).")


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> RecommendationService:
    """The process's recommendation service."""
    service: RecommendationService = request.app.state.service
    return service


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[RecommendationService, Depends(get_service)]


def role_of(key: str | None, settings: Settings) -> str | None:
    """The role of ``key``, compared in constant time against every configured key."""
    if not key:
        return None
    found = None
    for candidate, role in settings.parsed_api_keys().items():
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = role
    return found


async def require_read(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """Shop endpoints: a read or admin key, unless reads are open."""
    if settings.reads_open:
        return
    if role_of(key, settings) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown X-API-Key")


async def require_admin(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """Admin endpoints: an admin key, always."""
    role = role_of(key, settings)
    if role is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown X-API-Key")
    if role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint needs an admin key")


ReadAccess = Depends(require_read)
AdminAccess = Depends(require_admin)
