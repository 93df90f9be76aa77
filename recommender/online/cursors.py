"""Pagination cursors: the pages of one cursor never repeat an item, even when two are asked for at once.

A cursor is a random token and a Redis set of the items its pages showed (with a TTL). A page claims
its items with one script: each item is added to the set and kept only if it was not there, so two
concurrent pages of one cursor can never show the same item. An expired or unknown cursor is an
error the client can act on (start again), never a silent restart; each owner (a user, or an
anonymous client) holds at most ``RECSYS_CURSORS_PER_USER`` cursors, the oldest going first.
"""

from __future__ import annotations

import re
import secrets
import time

from redis.asyncio import Redis

from recommender.online.guard import Guard
from recommender.online.keys import Keys

TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
OPEN = "\x00open"
"""The member that makes a cursor's set exist from its first page on (no item id holds a control character)."""
CLAIM = """
local taken = {}
local want = tonumber(ARGV[1])
for i = 3, #ARGV do
  if #taken >= want then break end
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then taken[#taken + 1] = ARGV[i] end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return taken
"""


class CursorError(LookupError):
    """A cursor this API did not issue, or one that expired: start again with ``paginate=true``."""


class CursorUnavailableError(RuntimeError):
    """Redis is away: a later page cannot be told from the earlier ones, so none is served."""


class Cursors:
    """Start, read and claim cursor pages (calls go through the service's guard)."""

    def __init__(self, redis: Redis, keys: Keys, guard: Guard, ttl: int, per_owner: int) -> None:
        self.redis, self.keys, self.guard = redis, keys, guard
        self.ttl, self.per_owner = ttl, per_owner
        self._claim = redis.register_script(CLAIM)

    @staticmethod
    def new() -> str:
        """A fresh token."""
        return secrets.token_urlsafe(18)

    @staticmethod
    def well_formed(token: str) -> bool:
        """Whether ``token`` is shaped like the tokens this API issues."""
        return TOKEN.fullmatch(token) is not None

    async def seen(self, token: str) -> set[str]:
        """The items the cursor's pages showed (:class:`CursorError` when it expired or never existed)."""
        members = await self.guard(self.redis.smembers(self.keys.cursor(token)))
        if OPEN not in members:
            raise CursorError(
                f"cursor expired or unknown (cursors last {self.ttl} s after their last page); "
                "start again with paginate=true"
            )
        return {str(m) for m in members} - {OPEN}

    async def start(self, token: str, owner: str, shown: list[str]) -> None:
        """Open ``token`` for ``owner`` with its first page ``shown`` (one round trip: a new token has no
        other page to race with); the owner's oldest cursors beyond the cap are deleted."""
        index = self.keys.cursors_of(owner)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(self.keys.cursor(token), OPEN, *shown)
        pipe.expire(self.keys.cursor(token), self.ttl)
        pipe.zadd(index, {token: time.time()})
        pipe.zremrangebyscore(index, "-inf", time.time() - self.ttl)  # expired on their own
        pipe.zrange(index, 0, -self.per_owner - 1)
        pipe.expire(index, self.ttl)
        *_, over, _ = await self.guard(pipe.execute())
        if over:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(index, *over)
            for old in over:
                pipe.delete(self.keys.cursor(str(old)))
            await self.guard(pipe.execute())

    async def claim(self, token: str, ids: list[str], n: int) -> list[str]:
        """The first ``n`` of ``ids`` no page of ``token`` has shown, recorded as shown (atomically)."""
        if not ids:
            return []
        taken = await self.guard(self._claim(keys=[self.keys.cursor(token)], args=[n, self.ttl, *ids]))
        return [str(i) for i in taken]
