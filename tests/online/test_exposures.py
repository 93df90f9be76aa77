"""Experiment impressions counted in the worker and written a round at a time: none lost while Redis is
away, none counted twice."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from recommender.online.experiments import Exposures
from recommender.online.keys import Keys
from tests.conftest import free_port


def test_counts_wait_while_redis_is_away_and_are_written_once(redis_server: str) -> None:
    keys, r = Keys("exp-test"), redis.Redis.from_url(redis_server, decode_responses=True)
    r.delete(keys.served("e1"), keys.exposed("e1", "2"))
    exposures = Exposures()
    for user in ("a", "b", "a"):
        exposures.add("e1", "2", user)

    async def flush(url: str) -> None:
        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            await exposures.flush(client, keys)
        finally:
            await client.aclose()

    with pytest.raises(redis.ConnectionError):
        asyncio.run(flush(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens there
    exposures.add("e1", "2", "c")
    asyncio.run(flush(redis_server))
    asyncio.run(flush(redis_server))  # nothing new: writes nothing
    assert r.hget(keys.served("e1"), "2") == "4"
    assert r.smembers(keys.exposed("e1", "2")) == {"a", "b", "c"}
