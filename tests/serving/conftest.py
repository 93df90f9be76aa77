"""A published model in a real Valkey, and the API over it (TestClient and a live uvicorn)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.training import TrainConfig
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote
from serving.app import create_app
from tests.conftest import SMALL_SHOP_ARGS, served_live

SECRET = "api-secret"


SEQUENTIAL = TrainConfig(
    family="sequential", params={"hidden": 32, "blocks": 1, "inner": 64, "epochs": 30, "batch_rows": 16}
)


def publish_small_shop(settings: Settings, shop_dir: Path, config: TrainConfig | None = None) -> None:
    """Ingest a small synthetic shop, train (ALS unless ``config`` says otherwise), promote and publish it."""
    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), shop_dir)
    ingest_file(events, settings, catalog=catalog)
    out = train_and_register(settings, config or TrainConfig(family="als", params={"factors": 16, "iterations": 5}))
    promote(settings, "production", out.model_version)
    publish_model(settings)


def published_settings(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str, db: int, config: TrainConfig | None = None
) -> Settings:
    """Settings on database ``db`` of the session's Valkey (emptied), with the small shop trained and published."""
    url = redis_server.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    home = tmp_path_factory.mktemp(f"api-db{db}")
    settings = Settings(home=home / "home", hmac_secret=SECRET, redis_url=url)
    publish_small_shop(settings, home / "shop", config)
    return settings


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Settings:
    """Settings on db 1 of the session's Valkey, with one published (ALS) version."""
    return published_settings(tmp_path_factory, redis_server, 1)


@pytest.fixture(scope="session")
def sequential_settings(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Settings:
    """Settings on db 2 of the session's Valkey, with a sequential model published."""
    return published_settings(tmp_path_factory, redis_server, 2, SEQUENTIAL)


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


@pytest.fixture(scope="module")
def live_url(api_settings: Settings) -> Iterator[str]:
    """The API served by a real uvicorn on a free port."""
    with served_live(create_app(api_settings)) as url:
        yield url
