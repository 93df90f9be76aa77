"""Dependencies shared by the routes: settings, the service, API-key roles and user signatures.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which costs
more than the work they do.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from recommender.config import ApiKey, Settings, role_allows
from recommender.data.privacy import SignatureError, verify_user_signature
from recommender.online.service import RecommendationService

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (see RECSYS_API_KEYS).")
USER_SIGNATURE = "x-user-signature"


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


def key_of(key: str | None, settings: Settings) -> ApiKey | None:
    """The configured key matching ``key``, compared in constant time against every configured key."""
    if not key:
        return None
    found = None
    for candidate, configured in settings.parsed_api_keys().items():
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = configured
    return found


def role_of(key: str | None, settings: Settings) -> str | None:
    """The role of ``key`` (None for no key or an unknown one)."""
    found = key_of(key, settings)
    return None if found is None else found.role


def _open_without_key(needed: str, settings: Settings) -> bool:
    """Reads may be open (``RECSYS_OPEN_READS``); posting events only in keyless development; never more."""
    return settings.reads_open if needed == "read" else needed == "events" and settings.keyless


def authorize(settings: Settings, key: str | None, needed: str) -> str | None:
    """The caller's role if it may do what ``needed`` may (None: allowed without a key); 401 / 403 otherwise."""
    role = role_of(key, settings)
    if role is None:
        if key is None and _open_without_key(needed, settings):
            return None
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or unknown X-API-Key")
    if not role_allows(role, needed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this endpoint needs a key of the {needed} role or above")
    return role


def check_user_signature(settings: Settings, role: str | None, user_ids: set[str], signature: str | None) -> None:
    """With ``RECSYS_REQUIRE_USER_SIGNATURE``, below the write role: one user, signed by the shop, recently (403 for a
    wrong or missing signature, 401 for one too old or dated in the future)."""
    if not settings.require_user_signature or role_allows(role, "write"):
        return
    secret = settings.user_signing_secret
    assert secret is not None  # settings refuse the requirement without a secret
    if len(user_ids) != 1:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a signed request is for one user: the signature names one id")
    try:
        verify_user_signature(
            next(iter(user_ids)), signature, secret.get_secret_value(), settings.user_signature_max_age
        )
    except SignatureError as exc:  # stale or future-dated: authenticate again (401); wrong or missing: 403
        code = status.HTTP_401_UNAUTHORIZED if exc.expired else status.HTTP_403_FORBIDDEN
        raise HTTPException(
            code, f"this request needs X-User-Signature, the shop's signature of its user id: {exc}"
        ) from None


def require(needed: str) -> Callable[..., Awaitable[str | None]]:
    """A dependency that admits keys of the ``needed`` role or above; it returns the caller's role."""

    async def dependency(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> Any:
        return authorize(settings, key, needed)

    dependency.__doc__ = f"A key of the {needed} role or above."
    return dependency


ReadAccess = Depends(require("read"))
EventsAccess = Depends(require("events"))
WriteAccess = Depends(require("write"))
AdminAccess = Depends(require("admin"))
RoleDep = Annotated[str | None, EventsAccess]
ReadRole = Annotated[str | None, ReadAccess]
