"""The API's Redis pool: a burst beyond its connections waits for one, it does not fail."""

from __future__ import annotations

import asyncio

import pytest

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


def test_an_exhausted_pool_fails_that_call_without_pausing_the_worker(redis_server: str) -> None:
    """A call that finds no free connection in time answers from the fallback, but the worker's next calls
    go to Redis at once: before, the guard took it for Redis being away and paused every call for 1 s."""
    from recommender.online.guard import Guard, RedisUnavailableError

    async def run() -> tuple[bool, str | None]:
        settings = Settings(redis_url=redis_server, redis_timeout=0.05)  # the pool's wait for a connection
        client = async_client(settings, redis_server, max_connections=1, socket_timeout=2)
        guard = Guard(retry_after=30)
        try:
            slow = asyncio.ensure_future(client.blpop(["pool:empty"], timeout=0.3))  # holds the only connection
            await asyncio.sleep(0.02)
            failed = False
            try:
                await guard(client.get("pool:key"))
            except RedisUnavailableError:
                failed = True
            await slow
            return failed and not guard.open, await guard(client.get("pool:key"))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == (True, "v")


def test_a_none_error_inside_the_redis_package_is_redis_unavailable_and_any_other_still_raises() -> None:
    """redis-py's asyncio cluster client raises AttributeError ('NoneType' object has no attribute 'writelines')
    when a node's connection is torn down under a call (seen in tests/online/test_cluster.py's lost node, where it
    made a 500): the guard classifies such an error raised in the redis package's own files as an unavailable Redis
    (fallback answers). The same error raised by our code, or another error from the package, still raises."""
    import os

    import redis

    from recommender.online.guard import Guard, RedisUnavailableError

    scope: dict[str, object] = {}
    where = os.path.join(os.path.dirname(redis.__file__), "asyncio", "connection.py")
    source = "async def send():\n    None.writelines([])\nasync def other():\n    {}.missing\n"
    exec(compile(source, where, "exec"), scope)

    async def ours() -> None:
        None.writelines([])  # type: ignore[attr-defined]

    async def run() -> tuple[bool, bool]:
        guard = Guard(retry_after=30)
        with pytest.raises(AttributeError):
            await guard(ours())
        with pytest.raises(AttributeError):
            await guard(scope["other"]())  # type: ignore[operator]
        closed = not guard.open
        with pytest.raises(RedisUnavailableError, match="failed mid-call"):
            await guard(scope["send"]())  # type: ignore[operator]
        return closed, guard.open

    assert asyncio.run(run()) == (True, True)
