"""The in-process copy of the active version's popular lists: what a worker answers with when Redis is away.

Refreshed every ``RECSYS_FALLBACK_REFRESH_SECONDS`` in bounded calls (the category lists and the
catalog details in batches), so a big catalog cannot make the refresh pass the Redis timeout. The
answers leave out what the worker last knew to be hidden or sold out, and follow the rules it last
knew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from recommender.online.guard import Guard
from recommender.online.keys import Keys, decode
from recommender.online.versions import Item, List, Versions, VersionState

CATEGORY_BATCH = 500
"""Category lists per MGET."""


@dataclass
class Fallback:
    """In-process copy of the popular lists of one version."""

    version: str | None = None
    model_version: str | None = None
    popular: List = ([], [])
    by_category: dict[str, List] = field(default_factory=dict)
    details: dict[str, Item | None] = field(default_factory=dict)
    refreshed_at: float = 0.0
    state: VersionState | None = None
    """The version's state: its unavailable sets, with the live changes on top, keep applying."""

    def lists(self, category: str | None) -> List:
        """The popular list overall or of ``category`` (empty for an unknown one)."""
        return self.by_category.get(category, ([], [])) if category else self.popular


async def refreshed(redis: Redis, keys: Keys, guard: Guard, versions: Versions, version: str) -> Fallback:
    """A new copy of ``version``'s popular lists and their details (raises RedisUnavailableError)."""
    state = await versions.get(version)
    popular, categories = await guard(redis.mget(keys.popular(version), keys.categories(version)))
    names = [str(c) for c in orjson.loads(categories)] if categories else []
    by_category: dict[str, List] = {}
    for lo in range(0, len(names), CATEGORY_BATCH):
        chunk = names[lo : lo + CATEGORY_BATCH]
        values = await guard(redis.mget([keys.popular(version, c) for c in chunk]))
        by_category |= {c: decode(v) for c, v in zip(chunk, values, strict=True)}
    overall = decode(popular)
    ids = overall[0] + [i for lst in by_category.values() for i in lst[0]]
    known = await versions.details(state, ids)
    details = {i: known[i] for i in ids}
    return Fallback(version, state.model_version, overall, by_category, details, time.time(), state)
