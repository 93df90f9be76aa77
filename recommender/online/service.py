"""What the API does per request, as plain async functions over an async Redis client.

The route handlers in ``serving/`` each call one method of :class:`RecommendationService`.
It reads only what publishing precomputed (via the active-version pointer), filters and
fills lists cheaply, and keeps answering from an in-process copy of the popular lists when
Redis is down or slow (``source: fallback``), retrying Redis by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from recommender.config import Settings
from recommender.data.events import CANONICAL, validate_events
from recommender.data.privacy import pseudonymize
from recommender.online.erasure import ForgetReport, request_forget
from recommender.online.experiments import RecommendationIds, in_challenger
from recommender.online.keys import Keys, decode
from recommender.online.redis_conn import client, server_url
from recommender.online.session import blend, updated_session

Item = dict[str, Any]


class RedisUnavailableError(Exception):
    """Redis did not answer in time (or the service is waiting before retrying it)."""


class BacklogFullError(RuntimeError):
    """The event stream holds ``RECSYS_EVENT_BACKLOG_LIMIT`` undrained events: refuse more rather than drop any."""


class InvalidEventsError(ValueError):
    """Some posted events failed validation; ``errors`` says which and why."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid event(s)")
        self.errors = errors


@dataclass
class Listing:
    """One answer: items with scores (and details when asked), where they came from, and its signed id."""

    items: list[Item]
    source: str
    model_version: str | None
    recommendation_id: str


@dataclass
class Fallback:
    """In-process copy of the popular lists of the active version."""

    version: str | None = None
    model_version: str | None = None
    popular: tuple[list[str], list[float]] = ([], [])
    by_category: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)
    details: dict[str, Item | None] = field(default_factory=dict)
    refreshed_at: float = 0.0

    def lists(self, category: str | None) -> tuple[list[str], list[float]]:
        """The popular list overall or of ``category`` (empty for an unknown one)."""
        return self.by_category.get(category, ([], [])) if category else self.popular


def _split_csv(value: str | None, limit: int) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()][:limit]


class RecommendationService:
    """Reads published lists for the API; one instance per process.

    ``redis`` must carry socket and connect timeouts (``RECSYS_REDIS_TIMEOUT``): they are what
    bounds every call, and a timeout counts as Redis being unavailable.
    """

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.fallback = Fallback()
        self._down_until = 0.0
        self._model_versions: dict[str, str] = {}
        self._active_version: str | None = None
        self._challenger_version: str | None = None
        self._experiment_id: str | None = None
        self.ids = RecommendationIds(settings.hmac_secret.get_secret_value())
        self._active_read_at = -1e9
        self._backlog, self._backlog_read_at = 0, -1e9
        self._catalog_version: str | None = None  # published versions never change: their details are cached
        self._catalog: dict[str, Item | None] = {}

    # ---- Redis access with a timeout and a short circuit breaker ------------------
    async def _call(self, coro: Any) -> Any:
        if time.monotonic() < self._down_until:
            coro.close()
            raise RedisUnavailableError("waiting before retrying Redis")
        try:  # the client's socket timeouts bound each call (see redis_conn.async_client)
            return await coro
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self.settings.redis_retry_after
            raise RedisUnavailableError(str(exc) or type(exc).__name__) from exc

    async def _active(self, fresh: bool = False) -> str | None:
        """The active version, re-read at most every ``RECSYS_ACTIVE_CACHE_SECONDS`` (or now, if ``fresh``).

        Serving a just-replaced version for up to that long is safe: a flip keeps the previous
        version complete in Redis (``RECSYS_KEEP_VERSIONS`` >= 2).
        """
        now = time.monotonic()
        if fresh or now - self._active_read_at > self.settings.active_cache_seconds:
            version, challenger, experiment = await self._call(
                self.redis.mget(self.keys.active, self.keys.challenger, self.keys.experiment)
            )
            self._active_version = None if version is None else str(version)
            self._challenger_version = None if challenger is None else str(challenger)
            self._experiment_id = orjson.loads(experiment)["id"] if experiment and challenger else None
            self._active_read_at = now
        return self._active_version

    async def _model_version(self, version: str) -> str | None:
        if version not in self._model_versions:
            value = await self._call(self.redis.hget(self.keys.meta(version), "model_version"))
            if value is None:
                return None
            if len(self._model_versions) > 8:  # old versions: forget them
                self._model_versions = {}
            self._model_versions[version] = str(value)
        return self._model_versions[version]

    # ---- requests ----------------------------------------------------------------
    async def recommendations(
        self, user_id: str, n: int, exclude: str | None = None, category: str | None = None, details: bool = False
    ) -> Listing:
        """A user's top-n: personalized, popular (cold user) or fallback (Redis down)."""
        excluded = set(_split_csv(exclude, 1000))
        user = pseudonymize(user_id, self.settings.hmac_secret.get_secret_value())
        try:
            version = await self._active()
            if version is None:
                return self._listing([], "popular", None, "home")
            challenger = self._challenger_version
            if challenger is not None and in_challenger(user, self.settings.experiment_share):
                version = challenger
            if self.settings.session_items:  # the precomputed list and the session in one round trip
                stored, session = await self._call(
                    self.redis.mget(self.keys.user(version, user), self.keys.session(user))
                )
            else:
                stored, session = await self._call(self.redis.get(self.keys.user(version, user))), None
            ids, scores = decode(stored)
            source = "personalized" if ids else "popular"
            fill_ids: list[str] = []
            fill_scores: list[float] = []
            if len(ids) < n or excluded or category is not None or session:  # the list alone may not be enough
                fill_ids, fill_scores = await self._popular(version, category)
            if session:
                ids, scores, fill_ids, fill_scores, source = await self._with_session(
                    version, orjson.loads(session), (ids, scores), (fill_ids, fill_scores), source, n
                )
            if ids:  # fillers after a personalized list carry no model score
                fill_scores = [0.0] * len(fill_ids)
            need_details = details or category is not None
            info = await self._details(version, ids + fill_ids) if need_details else {}
            model_version = await self._model_version(version)
            if challenger is not None and self._experiment_id:  # an experiment runs: who was served which variant
                await self._exposed(self._experiment_id, str(model_version), user)
        except RedisUnavailableError:
            return self._from_fallback(n, excluded, category, details, "home")
        items = _merge([(ids, scores), (fill_ids, fill_scores)], n, excluded, category, info, details)
        return self._listing(items, source, model_version, "home")

    def _listing(self, items: list[Item], source: str, model_version: str | None, placement: str) -> Listing:
        return Listing(items, source, model_version, self.ids.issue(model_version, placement))

    async def _exposed(self, experiment_id: str, model_version: str, user: str) -> None:
        """Count the impression and remember the user on this variant (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.served(experiment_id), model_version, 1)
        pipe.sadd(self.keys.exposed(experiment_id, model_version), user)
        await self._call(pipe.execute())

    async def _with_session(
        self,
        version: str,
        recent: list[str],
        stored: tuple[list[str], list[float]],
        popular: tuple[list[str], list[float]],
        source: str,
        n: int,
    ) -> tuple[list[str], list[float], list[str], list[float], str]:
        """Blend the user's list (popular for a cold user) with the similar lists of their recent items."""
        values = await self._call(self.redis.mget([self.keys.similar(version, i) for i in recent]))
        base = stored if stored[0] else popular
        ids, scores = blend(base, [decode(v) for v in values], recent, self.settings.session_weight)
        seen = set(recent)
        fill = [i for i in popular[0] if i not in seen]
        changed = ids[:n] != [i for i in base[0] if i not in seen][:n]
        return ids, scores, fill, [0.0] * len(fill), "session" if changed else source

    async def similar(self, item_id: str, n: int, details: bool = False) -> Listing:
        """Items similar to ``item_id`` (empty for an unknown item)."""
        return await self._one_list(lambda v: self.keys.similar(v, item_id), "similar", n, details, {item_id}, None)

    async def popular(self, n: int, category: str | None = None, details: bool = False) -> Listing:
        """Popular items overall or in a category."""
        return await self._one_list(lambda v: self.keys.popular(v, category), "popular", n, details, set(), category)

    async def _one_list(
        self,
        key_of: Callable[[str], str],
        source: str,
        n: int,
        details: bool,
        excluded: set[str],
        category: str | None,
    ) -> Listing:
        """One published list as is; the fallback copy (minus ``excluded``, in ``category``) when Redis is away."""
        try:
            version = await self._active()
            if version is None:
                return self._listing([], source, None, source)
            ids, scores = decode(await self._call(self.redis.get(key_of(version))))
            info = await self._details(version, ids) if details else {}
            model_version = await self._model_version(version)
        except RedisUnavailableError:
            return self._from_fallback(n, excluded, category, details, source)
        return self._listing(_merge([(ids, scores)], n, set(), None, info, details), source, model_version, source)

    async def _popular(self, version: str, category: str | None) -> tuple[list[str], list[float]]:
        """A popular list of ``version``: from the in-process copy when it is of that version, else Redis."""
        if self.fallback.version == version:
            return self.fallback.lists(category)
        return decode(await self._call(self.redis.get(self.keys.popular(version, category))))

    async def _details(self, version: str, ids: list[str]) -> dict[str, Item | None]:
        """Catalog details of ``version`` (None: not in the catalog), with every one of ``ids`` present.

        A published version never changes, so details are cached per process: up to
        ``RECSYS_ITEM_CACHE_SIZE`` items of the newest version asked for. Read, never modify.
        """
        if version != self._catalog_version or len(self._catalog) > self.settings.item_cache_size:
            self._catalog_version, self._catalog = version, {}
        cache = self._catalog
        missing = [i for i in ids if i not in cache]
        if missing:
            values = await self._call(self.redis.hmget(self.keys.items(version), missing))
            for item_id, value in zip(missing, values, strict=True):
                cache[item_id] = None if value is None else orjson.loads(value)
        return cache

    def _from_fallback(
        self, n: int, excluded: set[str], category: str | None, details: bool, placement: str
    ) -> Listing:
        fb = self.fallback
        items = _merge([fb.lists(category)], n, excluded, category, fb.details, details)
        return self._listing(items, "fallback", fb.model_version, placement)

    async def forget(self, user_id: str) -> ForgetReport:
        """Remove a user from Redis now and queue the store's part (raises RedisUnavailableError)."""
        user = pseudonymize(user_id, self.settings.hmac_secret.get_secret_value())

        def run() -> ForgetReport:  # a rare admin call: the sync client in a thread, generous timeout
            with client(self.settings, server_url(self.settings), socket_timeout=10) as r:
                return request_forget(r, self.keys, user)

        try:
            return await asyncio.to_thread(run)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise RedisUnavailableError(str(exc)) from exc

    async def accept_events(self, events: list[dict[str, Any]]) -> int:
        """Validate like ingest; append all to the events stream, or raise :class:`InvalidEventsError`."""
        limit = self.settings.max_events_per_request
        if len(events) > limit:
            raise InvalidEventsError([{"index": None, "reason": f"{len(events)} events is over the limit of {limit}"}])
        frame = pd.DataFrame(
            [{k: (None if e.get(k) is None else str(e.get(k))) for k in CANONICAL} for e in events],
            columns=list(CANONICAL),
        ).assign(position=range(len(events)))
        checked = validate_events(frame, self.settings)
        if len(checked.bad):
            reasons = zip(checked.bad["position"], checked.bad["reason"], strict=True)
            raise InvalidEventsError([{"index": int(p), "reason": str(r)} for p, r in reasons])
        if await self.event_backlog(max_age=1.0) >= self.settings.event_backlog_limit:
            raise BacklogFullError(f"{self._backlog} events wait for the drain (RECSYS_EVENT_BACKLOG_LIMIT)")
        rows = checked.good.drop_columns(["source", "ingest_id"]).to_pylist()
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:  # never trimmed here: the drain trims what it has acknowledged
            pipe.xadd(self.keys.events, {k: _field(v) for k, v in row.items() if v is not None})
        await self._call(pipe.execute())
        self._backlog += len(rows)
        if self.settings.session_items:
            await self._remember(rows)
        return checked.good.num_rows

    async def event_backlog(self, max_age: float = 0.0) -> int:
        """Events in the stream that no drain has acknowledged yet (the drain trims what it acknowledged).

        Re-read from Redis when older than ``max_age`` seconds: the event route checks it once a
        second per worker, the metrics route every scrape.
        """
        now = time.monotonic()
        if now - self._backlog_read_at > max_age:
            self._backlog, self._backlog_read_at = int(await self._call(self.redis.xlen(self.keys.events))), now
        return self._backlog

    async def _remember(self, rows: list[dict[str, Any]]) -> None:
        """Push the accepted events' items onto their users' sessions (two round trips per batch)."""
        by_user: dict[str, list[str]] = {}
        for row in sorted(rows, key=lambda r: r["timestamp"]):
            by_user.setdefault(str(row["user_id"]), []).append(str(row["item_id"]))
        users = list(by_user)
        current = await self._call(self.redis.mget([self.keys.session(u) for u in users]))
        pipe = self.redis.pipeline(transaction=False)
        for user, old in zip(users, current, strict=True):
            items = updated_session(orjson.loads(old) if old else [], by_user[user], self.settings.session_items)
            pipe.set(self.keys.session(user), orjson.dumps(items), ex=self.settings.session_ttl_seconds)
        await self._call(pipe.execute())

    async def ready(self) -> dict[str, Any]:
        """Readiness: Redis reachable and an active version present."""
        try:
            self._down_until = 0.0
            version = await self._active(fresh=True)
        except RedisUnavailableError as exc:
            return {"ready": False, "redis": "unreachable", "detail": str(exc)}
        if version is None:
            return {"ready": False, "redis": "ok", "detail": "nothing published yet: run `recsys publish`"}
        return {"ready": True, "redis": "ok", "version": version, "model_version": await self._model_version(version)}

    async def refresh_fallback(self) -> bool:
        """Copy the active version's popular lists into memory; False when Redis is unavailable."""
        try:
            self._down_until = 0.0
            version = await self._active(fresh=True)
            if version is None or version == self.fallback.version:
                return version is not None
            popular, categories = await self._call(
                self.redis.mget(self.keys.popular(version), self.keys.categories(version))
            )
            names = orjson.loads(categories) if categories else []
            lists = await self._call(self.redis.mget([self.keys.popular(version, c) for c in names])) if names else []
            by_category = {c: decode(v) for c, v in zip(names, lists, strict=True)}
            ids = decode(popular)[0] + [i for lst in by_category.values() for i in lst[0]]
            known = await self._details(version, ids)
            details = {i: known[i] for i in ids}
            model_version = await self._model_version(version)
        except RedisUnavailableError:
            return False
        self.fallback = Fallback(version, model_version, decode(popular), by_category, details, time.time())
        return True


def _field(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _merge(
    lists: list[tuple[list[str], list[float]]],
    n: int,
    excluded: set[str],
    category: str | None,
    info: Mapping[str, Item | None],
    details: bool,
) -> list[Item]:
    """First ``n`` distinct items across ``lists`` in order, minus excluded / other categories."""
    out: list[Item] = []
    seen = set(excluded)
    for ids, scores in lists:
        for item_id, score in zip(ids, scores, strict=True):
            if len(out) == n:
                return out
            if item_id in seen or (category and (info.get(item_id) or {}).get("category") != category):
                continue
            seen.add(item_id)
            entry: Item = {"item_id": item_id, "score": score}
            if details:
                entry.update(info.get(item_id) or {})
            out.append(entry)
    return out
