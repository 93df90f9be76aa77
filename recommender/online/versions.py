"""One object per published version a worker serves: what it reads of that version once, and keeps.

A published version never changes, so a worker loads its meta (model version, when it read the
catalog), its unavailable sets and repurchase intervals once, and caches its popular lists, the
catalog details it was asked for and its sequential model. Champion and challenger each have their
own: an experiment costs no reloads when requests alternate between them. The live catalog's
changes (:mod:`recommender.online.livestate`) apply on top, per request, item by item.
"""

from __future__ import annotations

import asyncio
import base64
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from recommender.online.content import ContentIndex, LiveContent
from recommender.online.guard import Guard
from recommender.online.keys import Keys, List, decode
from recommender.online.sequence import SequenceScorer

Item = dict[str, Any]
SCAN_COUNT = 10_000
"""Members per SSCAN / HSCAN call, and ids per HMGET: each call stays well inside the Redis timeout."""


@dataclass
class VersionState:
    """What a worker knows of one published version."""

    version: str
    model_version: str | None
    read_at: float
    """When publishing read the catalog: live changes newer than this apply on top."""
    out_of_stock: frozenset[str]
    hidden: frozenset[str]
    repurchase: dict[str, float]
    blocked: frozenset[str] = frozenset()
    """``out_of_stock | hidden``: what the version itself keeps out (live changes decide per item on top)."""
    popular: dict[str | None, List] = field(default_factory=dict)
    details: dict[str, Item | None] = field(default_factory=dict)
    scorer: SequenceScorer | None = None
    scorer_read: bool = False
    content_parts: int = 0
    """Parts of the content index the version was published with (0: none)."""
    content: LiveContent | None = None
    calibration: tuple[float, ...] = ()
    """P(the user takes the item at each rank), measured at training (revenue-aware placements)."""


def _calibration(value: str | bytes | None) -> tuple[float, ...]:
    """A version's published calibration (empty: none, or not a list of numbers: served by relevance)."""
    try:
        found = orjson.loads(value) if value else []
    except orjson.JSONDecodeError:
        return ()
    ok = isinstance(found, list) and all(isinstance(p, int | float) and not isinstance(p, bool) for p in found)
    return tuple(float(p) for p in found) if ok else ()


class Versions:
    """The states of the last few versions a worker served, loaded on first use."""

    def __init__(self, redis: Redis, keys: Keys, guard: Guard, item_cache_size: int, keep: int = 4) -> None:
        self.redis, self.keys, self.guard = redis, keys, guard
        self.item_cache_size, self.keep = item_cache_size, keep
        self._states: OrderedDict[str, VersionState] = OrderedDict()
        self._content_read = asyncio.Lock()

    def cached(self, version: str) -> VersionState | None:
        """The state of ``version`` if it is loaded (no Redis call)."""
        return self._states.get(version)

    async def get(self, version: str) -> VersionState:
        """The state of ``version``, loaded from Redis the first time (bounded calls: SSCAN in batches)."""
        state = self._states.get(version)
        if state is None:
            state = await self._load(version)
            self._states[version] = state
            while len(self._states) > self.keep:
                self._states.popitem(last=False)
        self._states.move_to_end(version)
        return state

    async def _load(self, version: str) -> VersionState:
        fields = ["model_version", "catalog_read_at", "content_parts", "calibration"]
        meta = await self.guard(self.redis.hmget(self.keys.meta(version), fields))
        repurchase = await self.guard(self.redis.hgetall(self.keys.repurchase(version)))
        out_of_stock = await self._members(self.keys.out_of_stock(version))
        hidden = await self._members(self.keys.hidden(version))
        return VersionState(
            version,
            None if meta[0] is None else str(meta[0]),
            float(meta[1] or "-inf"),
            out_of_stock,
            hidden,
            {str(c): float(v) for c, v in repurchase.items()},
            out_of_stock | hidden,
            content_parts=int(meta[2] or 0),
            calibration=_calibration(meta[3]),
        )

    async def _members(self, key: str) -> frozenset[str]:
        members: set[str] = set()
        cursor: Any = 0
        while True:
            cursor, batch = await self.guard(self.redis.sscan(key, cursor, count=SCAN_COUNT))
            members.update(str(m) for m in batch)
            if not int(cursor):
                return frozenset(members)

    async def popular(self, state: VersionState, category: str | None) -> List:
        """A popular list of the version (overall or of ``category``), read once."""
        if category not in state.popular:
            if len(state.popular) > 256:
                state.popular = {None: state.popular[None]} if None in state.popular else {}
            value = await self.guard(self.redis.get(self.keys.popular(state.version, category)))
            state.popular[category] = decode(value)
        return state.popular[category]

    def cached_details(self, state: VersionState) -> dict[str, Item | None]:
        """The details of ``state`` this worker holds (no Redis call; read, never modify)."""
        if len(state.details) > self.item_cache_size:
            state.details = {}
        return state.details

    async def details(self, state: VersionState, ids: Iterable[str]) -> dict[str, Item | None]:
        """Catalog details of the version (None: not in the catalog), with every one of ``ids`` present.

        Up to ``RECSYS_ITEM_CACHE_SIZE`` items per version stay in memory; read, never modify.
        """
        cache = self.cached_details(state)
        missing = list((ids if isinstance(ids, set) else set(ids)).difference(cache))
        for lo in range(0, len(missing), SCAN_COUNT):
            chunk = missing[lo : lo + SCAN_COUNT]
            values = await self.guard(self.redis.hmget(self.keys.items(state.version), chunk))
            for item_id, value in zip(chunk, values, strict=True):
                cache[item_id] = None if value is None else orjson.loads(value)
        return cache

    async def scorer(self, state: VersionState) -> SequenceScorer | None:
        """The version's sequential model for the numpy forward pass (None: it has none), read once."""
        if not state.scorer_read:
            blob = await self.guard(self.redis.get(self.keys.sequence_model(state.version)))
            state.scorer = SequenceScorer.from_bytes(base64.b64decode(blob)) if blob else None
            state.scorer_read = True
        return state.scorer

    async def content(self, state: VersionState) -> LiveContent | None:
        """The version's content index with this worker's additions (None: published without one), read once:
        one GET per part (each within the Redis timeout), decoded off the event loop."""
        if state.content is None and state.content_parts:
            async with self._content_read:  # one read at a time: requests at a flip share it, not N copies
                if state.content is None:
                    parts = [
                        await self.guard(self.redis.get(self.keys.content(state.version, p)))
                        for p in range(state.content_parts)
                    ]
                    if all(parts):
                        blob = "".join(str(p) for p in parts)
                        index = await asyncio.to_thread(lambda: ContentIndex.from_bytes(base64.b64decode(blob)))
                        state.content = LiveContent(index)
        return state.content
