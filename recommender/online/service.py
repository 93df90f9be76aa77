"""What the API does per request, as plain async functions over an async Redis client.

The route handlers in ``serving/`` each call one method of :class:`RecommendationService`.
It reads only what publishing precomputed (via the active-version pointer), filters and
fills lists cheaply, and keeps answering from an in-process copy of the popular lists when
Redis is down or slow (``source: fallback``), retrying Redis by itself.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
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
from recommender.online.live import LiveView, change_items, parse_live, put_rules, rules_history, rules_in_force
from recommender.online.placements import Placement, due_again, load_placements, personalized
from recommender.online.redis_conn import client, server_url
from recommender.online.rules import RuleSet, arrange, mmr_window
from recommender.online.sequence import SequenceScorer
from recommender.online.session import blend, updated_session

Item = dict[str, Any]
Lists = list[tuple[list[str], list[float]]]
CURSOR = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class RedisUnavailableError(Exception):
    """Redis did not answer in time (or the service is waiting before retrying it)."""


class BacklogFullError(RuntimeError):
    """The event stream holds ``RECSYS_EVENT_BACKLOG_LIMIT`` undrained events: refuse more rather than drop any."""


class UnknownPlacementError(LookupError):
    """No placement of that name in the placements config."""


class PlacementQueryError(ValueError):
    """A placement request lacks what its feed needs (e.g. ``item_id`` for ``product``)."""


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
    cursor: str | None = None


@dataclass(frozen=True)
class PlacementQuery:
    """What one placement request asks for."""

    user_id: str | None = None
    item_id: str | None = None
    cart: tuple[str, ...] = ()
    n: int | None = None
    exclude: frozenset[str] = frozenset()
    category: str | None = None
    details: bool = False
    max_per_category: int | None = None
    cursor: str | None = None
    paginate: bool = False


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
        self.placements = load_placements(settings.placements_file)
        self.live = LiveView()
        self._popular_lists: dict[tuple[str, str | None], tuple[list[str], list[float]]] = {}
        self._scorers: dict[str, SequenceScorer | None] = {}  # per version: its sequential model's weights

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

    # ---- live catalog and rules --------------------------------------------------
    async def _live(self, version: str) -> LiveView:
        """The live state for ``version``, re-read when another version is served or the live counter moved.

        The counter is checked at most every ``RECSYS_LIVE_POLL_SECONDS``; in between a request
        costs nothing more than a clock read.
        """
        live, now = self.live, time.monotonic()
        if live.version == version and now - live.checked_at < self.settings.live_poll_seconds:
            return live
        rev = await self._call(self.redis.get(self.keys.live_rev))
        live.checked_at = now
        if live.version == version and rev == live.rev:
            return live
        fresh = LiveView(rev=rev, version=version, checked_at=now)
        if live.version == version:  # same version: its sets stay, the live fields and rules are re-read
            fresh.read_at, fresh.out_of_stock, fresh.hidden = live.read_at, live.out_of_stock, live.hidden
            fresh.repurchase = live.repurchase
        else:
            read_at, out_of_stock, hidden, repurchase = await self._call(self._version_catalog(version))
            fresh.read_at = float(read_at or "-inf")
            fresh.out_of_stock, fresh.hidden = frozenset(out_of_stock), frozenset(hidden)
            fresh.repurchase = {str(c): float(v) for c, v in repurchase.items()}
        names = list(self.placements)
        raw, stored = await self._call(self._live_fields(names))
        fresh.overrides = parse_live(raw)
        fresh.rules = {
            name: RuleSet.model_validate(orjson.loads(value)["rules"]) if value else self.placements[name].rules
            for name, value in zip(names, stored, strict=True)
        }
        self.live = fresh.rebuilt()
        return self.live

    async def _version_catalog(self, version: str) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.meta(version), "catalog_read_at")
        pipe.smembers(self.keys.out_of_stock(version))
        pipe.smembers(self.keys.hidden(version))
        pipe.hgetall(self.keys.repurchase(version))
        return list(await pipe.execute())

    async def _live_fields(self, placements: list[str]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)  # GETs: a cluster pipeline refuses MGET
        pipe.hgetall(self.keys.catalog_live)
        for name in placements:
            pipe.get(self.keys.rules(name))
        raw, *stored = await pipe.execute()
        return [raw, stored]

    async def change_items(self, changes: Mapping[str, Mapping[str, Any]]) -> int:
        """Apply live catalog changes (item -> fields); they show on the next request of every worker."""
        changed = await self._call(change_items(self.redis, self.keys, changes))
        self.live.checked_at = -1e9  # this worker sees its own change at once
        return int(changed)

    def placement_of(self, name: str) -> Placement:
        """The named placement (:class:`UnknownPlacementError` if none)."""
        if name not in self.placements:
            raise UnknownPlacementError(f"no placement {name!r}; placements: {', '.join(self.placements)}")
        return self.placements[name]

    async def put_rules(self, name: str, rules: RuleSet, by: str) -> dict[str, Any]:
        """Replace a placement's rules (kept in its history)."""
        self.placement_of(name)
        entry = await self._call(put_rules(self.redis, self.keys, name, rules, by))
        self.live.checked_at = -1e9
        return dict(entry)

    async def rules(self, name: str) -> dict[str, Any]:
        """A placement's rules: the stored entry, or the config's (``by: config``)."""
        entry = await self._call(rules_in_force(self.redis, self.keys, name, self.placement_of(name).rules))
        return dict(entry)

    async def rules_history(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """A placement's past rule sets, newest first."""
        self.placement_of(name)
        return list(await self._call(rules_history(self.redis, self.keys, name, limit)))

    # ---- requests ----------------------------------------------------------------
    async def recommendations(
        self, user_id: str, n: int, exclude: str | None = None, category: str | None = None, details: bool = False
    ) -> Listing:
        """A user's top-n (the ``home`` placement): personalized, popular (cold user) or fallback (Redis down)."""
        query = PlacementQuery(
            user_id=user_id, n=n, exclude=frozenset(_split_csv(exclude, 1000)), category=category, details=details
        )
        return await self.placement("home", query)

    async def placement(self, name: str, q: PlacementQuery) -> Listing:
        """One placement's list for one request, under its rules, without unavailable or excluded items."""
        placement = self.placement_of(name)
        n = min(q.n or placement.n, self.settings.max_n)
        user = pseudonymize(q.user_id, self.settings.hmac_secret.get_secret_value()) if q.user_id else None
        cursor = _cursor(q)
        try:
            version = await self._active()
            if version is None:
                return self._listing([], "popular", None, name)
            challenger = self._challenger_version
            if user is not None and challenger is not None and in_challenger(user, self.settings.experiment_share):
                version = challenger
            live = await self._live(version)
            rules = live.rules.get(name, placement.rules).narrowed(q.category, q.max_per_category)
            excluded: AbstractSet[str] = q.exclude
            if q.cursor:
                excluded = excluded | set(await self._call(self.redis.smembers(self.keys.cursor(q.cursor))))
            lists, source = await self._feed(placement, version, live, user, q, n)
            items = await self._arranged(version, lists, rules, n, excluded, live, q.details)
            model_version = await self._model_version(version)
            if user is not None and challenger is not None and self._experiment_id:
                await self._exposed(self._experiment_id, str(model_version), user)
            if cursor:
                await self._remember_page(cursor, items)
        except RedisUnavailableError:
            return self._from_fallback(n, q, placement, name)
        return self._listing(items, source, model_version, name, cursor)

    async def _feed(
        self, placement: Placement, version: str, live: LiveView, user: str | None, q: PlacementQuery, n: int
    ) -> tuple[Lists, str]:
        """The placement's candidate lists, best first, and where they came from."""
        if placement.feed == "recent":
            if user is None:
                raise PlacementQueryError("this placement needs user_id")
            session = await self._call(self.redis.get(self.keys.session(user)))
            recent = orjson.loads(session) if session else []
            return [(recent, [0.0] * len(recent))], "session"
        if placement.feed == "similar":
            if not q.item_id:
                raise PlacementQueryError("this placement needs item_id")
            keys = [self.keys.similar(version, q.item_id)] + ([self.keys.user(version, user)] if user else [])
            values = await self._call(self.redis.mget(keys))
            similar = decode(values[0])
            if user:
                similar = personalized(similar, decode(values[1]), placement.personalize)
            return [similar, _unscored(await self._popular(version, None))], "similar"
        if placement.feed == "together":
            if not q.cart:
                raise PlacementQueryError("this placement needs cart (comma-separated item ids)")
            return await self._together(version, q.cart), "together"
        if placement.feed == "buy_again":
            if user is None:
                raise PlacementQueryError("this placement needs user_id")
            bought = decode(await self._call(self.redis.get(self.keys.bought(version, user))))
            info = _LiveDetails(await self._details(version, bought[0]), live)
            due = due_again(bought, lambda i: (info.get(i) or {}).get("category"), live.repurchase, time.time())
            return [due], "buy_again"
        return await self._user_lists(version, user, n, q.category)

    async def _together(self, version: str, cart: tuple[str, ...]) -> Lists:
        """The cart items' bought-together lists fused (their similar lists where they have none), then popular."""
        keys = [self.keys.together(version, i) for i in cart] + [self.keys.similar(version, i) for i in cart]
        values = await self._call(self.redis.mget(keys))
        lists = [
            decode(t) if t is not None else decode(s)
            for t, s in zip(values[: len(cart)], values[len(cart) :], strict=True)
        ]
        ids, scores = blend(([], []), lists, list(cart), 1.0)
        return [(ids, scores), _unscored(await self._popular(version, None))]

    async def _user_lists(self, version: str, user: str | None, n: int, category: str | None) -> tuple[Lists, str]:
        """The user's precomputed list (blended with their session), then popular items to fill."""
        if user is None:
            return [await self._popular(version, category)], "popular"
        if self.settings.session_items:  # the precomputed list and the session in one round trip
            stored, session = await self._call(self.redis.mget(self.keys.user(version, user), self.keys.session(user)))
        else:
            stored, session = await self._call(self.redis.get(self.keys.user(version, user))), None
        ids, scores = decode(stored)
        source = "personalized" if ids else "popular"
        fill = await self._popular(version, category)
        if session:
            ids, scores, fill, source = await self._with_session(
                version, user, orjson.loads(session), (ids, scores), fill, source, n
            )
        return [(ids, scores), _unscored(fill) if ids else fill], source

    async def _arranged(
        self,
        version: str,
        lists: Lists,
        rules: RuleSet,
        n: int,
        excluded: AbstractSet[str],
        live: LiveView,
        details: bool,
    ) -> list[Item]:
        """The first ``n`` candidates under ``rules``; catalog attributes are read only when needed."""
        blocked = live.unavailable
        if rules.empty and not details:  # the fast path: live changes matter only through ``unavailable``
            return _merge(lists, n, excluded, blocked, {}, False)
        candidates: Iterable[tuple[str, float]] = _distinct(lists)  # read lazily by arrange
        info: Mapping[str, Mapping[str, Any] | None] = {}
        if rules.needs_attributes or details:
            cache = await self._details(version, [i for ids, _ in lists for i in ids] + rules.pinned_items)
            info = _LiveDetails(cache, live)
        similar = None
        if rules.diversity.mmr_lambda is not None:
            candidates = list(candidates)
            similar = await self._similar_lists(version, [i for i, _ in candidates[: mmr_window(n)]])
        chosen = arrange(
            candidates, info, rules, n, datetime.now(UTC), unavailable=blocked, excluded=excluded, similar=similar
        )
        return _entries(chosen, info, details)

    async def _similar_lists(self, version: str, ids: list[str]) -> dict[str, tuple[list[str], list[float]]]:
        """The published similar lists of ``ids`` (MMR's similarities)."""
        values = await self._call(self.redis.mget([self.keys.similar(version, i) for i in ids])) if ids else []
        return {item: decode(value) for item, value in zip(ids, values, strict=True)}

    async def _remember_page(self, cursor: str, items: list[Item]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if items:
            pipe.sadd(self.keys.cursor(cursor), *[i["item_id"] for i in items])
        pipe.expire(self.keys.cursor(cursor), self.settings.cursor_ttl_seconds)
        await self._call(pipe.execute())

    def _listing(
        self, items: list[Item], source: str, model_version: str | None, placement: str, cursor: str | None = None
    ) -> Listing:
        return Listing(items, source, model_version, self.ids.issue(model_version, placement), cursor)

    async def _exposed(self, experiment_id: str, model_version: str, user: str) -> None:
        """Count the impression and remember the user on this variant (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.keys.served(experiment_id), model_version, 1)
        pipe.sadd(self.keys.exposed(experiment_id, model_version), user)
        await self._call(pipe.execute())

    async def _with_session(
        self,
        version: str,
        user: str,
        recent: list[str],
        stored: tuple[list[str], list[float]],
        popular: tuple[list[str], list[float]],
        source: str,
        n: int,
    ) -> tuple[list[str], list[float], tuple[list[str], list[float]], str]:
        """The user's list after their session: re-scored by the sequential model when the version has one,
        else blended with the similar lists of the recent items (popular for a cold user)."""
        base = stored if stored[0] else popular
        scorer = await self._scorer(version)
        if scorer is not None and scorer.weight > 0:
            past = await self._call(self.redis.get(self.keys.sequence(version, user)))
            ids, scores = scorer.top([*(orjson.loads(past) if past else []), *reversed(recent)], self.settings.top_n)
            if scorer.weight < 1.0 and stored[0]:  # a blend: the other member's part is in the stored list
                ids, scores = blend((ids, scores), [stored], recent, (1.0 - scorer.weight) / scorer.weight)
        else:
            values = await self._call(self.redis.mget([self.keys.similar(version, i) for i in recent]))
            ids, scores = blend(base, [decode(v) for v in values], recent, self.settings.session_weight)
        seen = set(recent)
        fill = [i for i in popular[0] if i not in seen]
        changed = ids[:n] != [i for i in base[0] if i not in seen][:n]
        return ids, scores, (fill, [0.0] * len(fill)), "session" if changed else source

    async def _scorer(self, version: str) -> SequenceScorer | None:
        """``version``'s sequential model for the numpy forward pass (None: it has none); read once per process."""
        if version not in self._scorers:
            if len(self._scorers) > 4:
                self._scorers = {}
            blob = await self._call(self.redis.get(self.keys.sequence_model(version)))
            self._scorers[version] = SequenceScorer.from_bytes(base64.b64decode(blob)) if blob else None
        return self._scorers[version]

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
        """One published list minus unavailable items; the fallback copy (minus ``excluded``, in ``category``)
        when Redis is away."""
        try:
            version = await self._active()
            if version is None:
                return self._listing([], source, None, source)
            live = await self._live(version)
            lists = [decode(await self._call(self.redis.get(key_of(version))))]
            items = await self._arranged(version, lists, RuleSet(), n, frozenset(), live, details)
            model_version = await self._model_version(version)
        except RedisUnavailableError:
            query = PlacementQuery(n=n, exclude=frozenset(excluded), category=category, details=details)
            return self._from_fallback(n, query, None, source)
        return self._listing(items, source, model_version, source)

    async def _popular(self, version: str, category: str | None) -> tuple[list[str], list[float]]:
        """A popular list of ``version``: from the in-process copy when it is of that version, else Redis."""
        if self.fallback.version == version:
            return self.fallback.lists(category)
        key = (version, category)  # another version (the challenger's): published lists never change, keep them
        if key not in self._popular_lists:
            if len(self._popular_lists) > 256:
                self._popular_lists = {}
            self._popular_lists[key] = decode(await self._call(self.redis.get(self.keys.popular(version, category))))
        return self._popular_lists[key]

    async def _details(self, version: str, ids: list[str]) -> dict[str, Item | None]:
        """Catalog details of ``version`` (None: not in the catalog), with every one of ``ids`` present.

        A published version never changes, so details are cached per process: up to
        ``RECSYS_ITEM_CACHE_SIZE`` items of the newest version asked for. Read, never modify.
        """
        if version != self._catalog_version or len(self._catalog) > self.settings.item_cache_size:
            self._catalog_version, self._catalog = version, {}
        cache = self._catalog
        missing = list(dict.fromkeys(i for i in ids if i not in cache))
        if missing:
            values = await self._call(self.redis.hmget(self.keys.items(version), missing))
            for item_id, value in zip(missing, values, strict=True):
                cache[item_id] = None if value is None else orjson.loads(value)
        return cache

    def _from_fallback(self, n: int, q: PlacementQuery, placement: Placement | None, name: str) -> Listing:
        """The in-process popular lists, under the last known live state and rules (Redis is away)."""
        fb, live = self.fallback, self.live
        rules = (live.rules.get(name, placement.rules) if placement else RuleSet()).narrowed(
            q.category, q.max_per_category
        )
        info = _LiveDetails(fb.details, live)
        chosen = arrange(
            _distinct([fb.lists(q.category)]), info, rules, n, datetime.now(UTC),
            unavailable=live.unavailable, excluded=q.exclude,
        )  # fmt: skip
        return self._listing(_entries(chosen, info, q.details), "fallback", fb.model_version, name)

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


class _LiveDetails(Mapping[str, Mapping[str, Any] | None]):
    """Published catalog details with the live changes on top, item by item, as they are asked for."""

    def __init__(self, published: Mapping[str, Item | None], live: LiveView) -> None:
        self.published, self.live = published, live

    def __getitem__(self, item_id: str) -> Mapping[str, Any] | None:
        return self.live.details(item_id, self.published.get(item_id))

    def get(self, item_id: str, default: Any = None) -> Mapping[str, Any] | None:
        """As ``__getitem__`` (never a KeyError): the rules ask once per candidate."""
        return self.live.details(item_id, self.published.get(item_id))

    def __iter__(self) -> Any:
        return iter(self.published)

    def __len__(self) -> int:
        return len(self.published)


def _cursor(q: PlacementQuery) -> str | None:
    """The request's cursor (validated), a new one with ``paginate``, else None."""
    if q.cursor is not None:
        if not CURSOR.fullmatch(q.cursor):
            raise PlacementQueryError("cursor is not one this API issued")
        return q.cursor
    return secrets.token_urlsafe(18) if q.paginate else None


def _unscored(lst: tuple[list[str], list[float]]) -> tuple[list[str], list[float]]:
    """Fillers after a model's list carry no model score."""
    return lst[0], [0.0] * len(lst[0])


def _distinct(lists: Lists) -> Iterator[tuple[str, float]]:
    """The lists' items in order, each once (its first score), as they are asked for."""
    seen: set[str] = set()
    for ids, scores in lists:
        for item_id, score in zip(ids, scores, strict=True):
            if item_id not in seen:
                seen.add(item_id)
                yield item_id, score


def _entries(
    chosen: list[tuple[str, float]], info: Mapping[str, Mapping[str, Any] | None], details: bool
) -> list[Item]:
    if not details:
        return [{"item_id": i, "score": s} for i, s in chosen]
    return [{"item_id": i, "score": s, **(info.get(i) or {})} for i, s in chosen]


def _merge(
    lists: Lists,
    n: int,
    excluded: AbstractSet[str],
    unavailable: AbstractSet[str],
    info: Mapping[str, Item | None],
    details: bool,
) -> list[Item]:
    """First ``n`` distinct items across ``lists`` in order, minus excluded and unavailable ones."""
    out: list[Item] = []
    seen: set[str] = set()
    for ids, scores in lists:
        for item_id, score in zip(ids, scores, strict=True):
            if len(out) == n:
                return out
            if item_id in seen or item_id in excluded or item_id in unavailable:
                continue
            seen.add(item_id)
            entry: Item = {"item_id": item_id, "score": score}
            if details:
                entry.update(info.get(item_id) or {})
            out.append(entry)
    return out
