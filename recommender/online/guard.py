"""Every Redis call of the API process goes through one :class:`Guard`: a timeout and a short circuit breaker.

The client's socket timeouts (``RECSYS_REDIS_TIMEOUT``) bound each call; a call that fails or times
out raises :class:`RedisUnavailableError`, and for ``RECSYS_REDIS_RETRY_AFTER`` seconds after it the
guard refuses calls at once (the API answers from its fallback meanwhile, without waiting on Redis).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable
from typing import TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

T = TypeVar("T")
REDIS_PACKAGE = os.path.dirname(redis.__file__)


class RedisUnavailableError(Exception):
    """Redis did not answer in time (or the service is waiting before retrying it)."""


class Guard:
    """Runs awaitables against Redis, turning failures into :class:`RedisUnavailableError`."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        self.down_until = 0.0

    async def __call__(self, call: Awaitable[T]) -> T:
        if time.monotonic() < self.down_until:
            close = getattr(call, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise RedisUnavailableError("waiting before retrying Redis")
        try:
            return await call
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            if not _pool_exhausted(exc) and not isinstance(exc, ResponseError):  # a busy worker or a refused
                # command, not an absent Redis: no pause for the others
                self.down_until = time.monotonic() + self.retry_after
            raise RedisUnavailableError(str(exc) or type(exc).__name__) from exc
        except (AttributeError, TypeError) as exc:
            if not _raised_in_the_client(exc):
                raise
            # redis-py's asyncio cluster client can trip on a connection torn down under it when a node goes
            # (redis/redis-py#3546, #3835): that is Redis being unavailable, not a bug of the request
            self.down_until = time.monotonic() + self.retry_after
            raise RedisUnavailableError(f"the Redis client failed mid-call: {exc}") from exc

    def reset(self) -> None:
        """Try Redis again on the next call (readiness and refresh probes do)."""
        self.down_until = 0.0

    @property
    def open(self) -> bool:
        """Whether calls are being refused right now."""
        return time.monotonic() < self.down_until


def _pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` is the blocking pool's "no connection free within its timeout" (redis-py raises a
    ConnectionError from the wait's TimeoutError)."""
    return isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, TimeoutError)


def _raised_in_the_client(exc: BaseException) -> bool:
    """Whether ``exc`` is the redis client tripping on a connection object torn down under it: a ``NoneType``
    error raised in the ``redis`` package itself (its innermost frame one of its files)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (
        tb is not None
        and "'NoneType' object" in str(exc)
        and tb.tb_frame.f_code.co_filename.startswith(REDIS_PACKAGE + os.sep)
    )
