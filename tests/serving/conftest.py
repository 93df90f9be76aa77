"""A published model in a real Valkey, and the API over it (TestClient and a live uvicorn).

The shops are built once per test process and restored for each module (``tests/shops.py``): the
tests of a module share what they write, as they did when each module published its own shop.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from serving.app import create_app
from tests.conftest import served_live
from tests.shops import Shop


@pytest.fixture(scope="module")
def api_settings(shops: dict[str, Shop]) -> Settings:
    """Settings on db 1 of the session's Valkey, with one published (ALS) version."""
    return shops["api"].restore()


@pytest.fixture(scope="module")
def sequential_settings(shops: dict[str, Shop]) -> Settings:
    """Settings on db 2 of the session's Valkey, with a sequential model published."""
    return shops["sequential"].restore()


@pytest.fixture(scope="module")
def keyed(api_settings: Settings) -> Settings:
    """Keys of each role (``shop`` reads, ``backend`` writes, ``ops`` is an admin with the ``merch`` scope); every
    worker re-checks the live state on every request (no poll interval)."""
    return api_settings.model_copy(
        update={"api_keys": SecretStr("shop:read,backend:write,ops:admin:merch"), "live_poll_seconds": 0.0}
    )


@pytest.fixture
def c(keyed: Settings) -> Iterator[TestClient]:
    """The API over :func:`keyed`."""
    with TestClient(create_app(keyed)) as client:
        yield client


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


@pytest.fixture(scope="module")
def live_url(api_settings: Settings) -> Iterator[str]:
    """The API served by a real uvicorn on a free port."""
    with served_live(create_app(api_settings)) as url:
        yield url
