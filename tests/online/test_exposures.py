"""Experiment impressions counted in the worker and written a round at a time: at most once, even when
Redis applied a write whose reply was lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio

from recommender.online.experiments import Exposures
from recommender.online.keys import Keys
from tests.conftest import free_port


def _flush(exposures: Exposures, keys: Keys, url: str, fail_after_send: bool = False) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.2)
        if fail_after_send:  # the pipeline reaches Redis, its reply does not reach the worker
            real = client.pipeline

            def pipeline(**kwargs: Any) -> Any:
                pipe = real(**kwargs)
                send = pipe.execute

                async def execute(**kw: Any) -> Any:
                    await send(**kw)
                    raise redis.TimeoutError("reply lost")

                pipe.execute = execute  # type: ignore[method-assign]
                return pipe

            client.pipeline = pipeline  # type: ignore[method-assign]
        try:
            await exposures.flush(client, keys)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_a_failed_flush_is_never_sent_again(redis_server: str) -> None:
    keys, r = Keys("exp-test"), redis.Redis.from_url(redis_server, decode_responses=True)
    r.delete(keys.served("e1"), keys.exposed("e1", "2"))
    exposures = Exposures()
    for user in ("a", "b", "a"):
        exposures.add("e1", "2", user)
    with pytest.raises(redis.TimeoutError):
        _flush(exposures, keys, redis_server, fail_after_send=True)  # applied, but the worker cannot know
    exposures.add("e1", "2", "c")
    _flush(exposures, keys, redis_server)
    _flush(exposures, keys, redis_server)  # nothing new: writes nothing
    assert r.hget(keys.served("e1"), "2") == "4"  # 3 + 1: the lost reply's round is not counted twice
    assert r.smembers(keys.exposed("e1", "2")) == {"a", "b", "c"}


def test_a_flush_while_redis_is_away_loses_only_that_round(redis_server: str) -> None:
    keys, r = Keys("exp-test2"), redis.Redis.from_url(redis_server, decode_responses=True)
    exposures = Exposures()
    exposures.add("e1", "2", "a")
    with pytest.raises(redis.ConnectionError):
        _flush(exposures, keys, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    exposures.add("e1", "2", "b")
    _flush(exposures, keys, redis_server)
    assert r.hget(keys.served("e1"), "2") == "1"
    assert r.smembers(keys.exposed("e1", "2")) == {"b"}
