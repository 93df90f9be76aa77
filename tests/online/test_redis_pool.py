"""The API's Redis pool: a burst beyond its connections waits for one, it does not fail."""

from __future__ import annotations

import asyncio

from recommender.config import Settings
from recommender.online.redis_conn import async_client


def test_more_concurrent_calls_than_connections_all_succeed(redis_server: str) -> None:
    """With the plain pool the 3rd concurrent call raised MaxConnectionsError, which the API answers from
    its fallback (a burst of traffic degraded every answer while Redis was fine)."""

    async def burst() -> list[object]:
        client = async_client(Settings(redis_url=redis_server), redis_server, max_connections=2)
        try:
            await client.set("pool:key", "v")
            return await asyncio.gather(*(client.get("pool:key") for _ in range(50)), return_exceptions=True)
        finally:
            await client.aclose()

    assert asyncio.run(burst()) == ["v"] * 50
