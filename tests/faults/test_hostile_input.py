"""Hostile input, schema-driven (schemathesis): every route, with the key of each role and user signatures
required, answers no input with a 5xx.

The keys a browser holds (``read``, ``events``) matter most: they are public. Each call carries the role's
real key; below the write role it also carries the shop's valid signature of the user the case names
(path, query or body), unless the fuzzer made up an ``X-User-Signature`` of its own (kept: any header text
is input too). So the calls get past the doors they may pass and are refused, never crashed, at the others.

``RECSYS_FUZZ_EXAMPLES`` sets the examples per route and role (25 here; bench/faults.py runs 500).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from recommender.config import ROLES, Settings
from recommender.data.privacy import sign_user
from serving.app import create_app
from tests.conftest import served_live
from tests.shops import Shop

KEY_OF = {role: f"fuzz-{role}-key" for role in ROLES}
KEYS = SecretStr(",".join(f"{key}:{role}" for role, key in KEY_OF.items()))
SIGNING = "fuzz-signing-secret-" + "s" * 24
EXAMPLES = int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "25"))
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def keyed_api(shops: dict[str, Shop]) -> Iterator[str]:
    """The published small shop, served with a key per role and signatures required; yields its URL."""
    published = shops["api"].restore()
    signed = {"api_keys": KEYS, "user_signing_secret": SecretStr(SIGNING), "require_user_signature": True}
    with served_live(create_app(published.model_copy(update=signed))) as url:
        yield url


def user_named(case: schemathesis.Case) -> str | None:
    """The one user id a case is about, if it names one (path, query, or an event body)."""
    for source in (case.path_parameters or {}, case.query or {}):
        if isinstance(source.get("user_id"), str):
            return str(source["user_id"])
    body: Any = case.body
    events = body if isinstance(body, list) else [body]
    ids = [e.get("user_id") for e in events if isinstance(e, dict)]
    return ids[0] if ids and isinstance(ids[0], str) and all(i == ids[0] for i in ids) else None


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error_with_any_roles_key_and_signatures_on(
    case: schemathesis.Case, role: str, keyed_api: str
) -> None:
    headers = {**(case.headers or {}), "X-API-Key": KEY_OF[role]}  # a generated key would stop at the door
    user = user_named(case)
    if user is not None and "X-User-Signature" not in headers:
        headers["X-User-Signature"] = sign_user(user, SIGNING)
    case.headers = headers
    response = case.call(base_url=keyed_api, timeout=10)
    assert response.status_code < 500, (role, case.method, case.formatted_path, response.text[:300])
    if role == "admin":
        assert response.status_code not in (401, 403), "the fuzzer must get past authentication"
