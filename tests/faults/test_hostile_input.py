"""Hostile input, schema-driven (schemathesis): every route, the admin and write ones included (the calls carry
a real admin key, so they get past authentication), answers no input with a 5xx.

``RECSYS_FUZZ_EXAMPLES`` sets the examples per route (25 here; bench/faults.py runs 500).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from recommender.config import Settings
from serving.app import create_app
from tests.conftest import served_live
from tests.shops import Shop

ADMIN = "fuzz-admin-key"
KEYS = SecretStr(f"fuzz-read-key:read,fuzz-events-key:events,fuzz-write-key:write,{ADMIN}:admin")
EXAMPLES = int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "25"))
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def keyed_api(shops: dict[str, Shop]) -> Iterator[str]:
    """The published small shop, served with keys by a real uvicorn; yields its URL."""
    published = shops["api"].restore()
    with served_live(create_app(published.model_copy(update={"api_keys": KEYS}))) as url:
        yield url


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error_even_past_authentication(case: schemathesis.Case, keyed_api: str) -> None:
    case.headers = {**(case.headers or {}), "X-API-Key": ADMIN}  # a generated key would stop at the door
    response = case.call(base_url=keyed_api, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
    assert response.status_code not in (401, 403), "the fuzzer must get past authentication"
