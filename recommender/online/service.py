"""What the API does per request, as plain async methods over an async Redis client.

The route handlers in ``serving/`` each call one method of :class:`RecommendationService`. A request
goes through three stages, each a module of its own: the feed (:mod:`recommender.online.feeds`: the
candidate lists), the arrangement under the placement's rules (:mod:`recommender.online.listing`),
then the listing (cursor pages, the signed recommendation id). What a worker keeps of each served
version is one object per version (:mod:`recommender.online.versions`), the live catalog and rules
one copy kept current from what changed (:mod:`recommender.online.livestate`). When Redis is down
or slow the worker answers from an in-process copy of the popular lists (``source: fallback``,
:mod:`recommender.online.fallback`) and retries Redis by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from recommender.config import Settings, role_allows
from recommender.data.events import as_text, events_frame, plain_rows, validate_events
from recommender.data.privacy import pseudonymize
from recommender.online.audiences import Answer, Target, ask
from recommender.online.cursors import CursorError, Cursors, CursorUnavailableError
from recommender.online.erasure import ForgetReport, request_forget
from recommender.online.experiments import Exposures, RecommendationIds, in_challenger
from recommender.online.explore import Exploration, placed, slots
from recommender.online.fallback import Fallback, refreshed
from recommender.online.feeds import ExploreQuery, Feed, FeedQuery, Feeds, PlacementQueryError
from recommender.online.guard import Guard, RedisUnavailableError
from recommender.online.keys import Keys, decode
from recommender.online.listing import POPULAR, POPULAR_REASON, Why, arranged, entries
from recommender.online.live import change_items, put_rules, rules_history, rules_in_force
from recommender.online.livestate import LiveState, load, poll
from recommender.online.placements import USER_FEEDS, Placement, load_placements
from recommender.online.redis_conn import client, server_url
from recommender.online.revenue import EXPONENTS, by_value
from recommender.online.rules import Candidates, RuleSet, active_pins, arrange
from recommender.online.session import updated_session
from recommender.online.versions import Item, List, Versions, VersionState

__all__ = [
    "BacklogFullError",
    "CursorError",
    "CursorUnavailableError",
    "InvalidEventsError",
    "Listing",
    "PlacementQuery",
    "PlacementQueryError",
    "RecommendationService",
    "RedisUnavailableError",
    "UnknownPlacementError",
]


class BacklogFullError(RuntimeError):
    """The event stream holds ``RECSYS_EVENT_BACKLOG_LIMIT`` undrained events: refuse more rather than drop any."""


class UnknownPlacementError(LookupError):
    """No placement of that name in the placements config."""


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
    client: str | None = None
    """The caller's address: the owner of its cursors when there is no user."""


def csv_ids(text: str | None, limit: int = 100) -> tuple[str, ...]:
    """Distinct comma-separated ids, in order, at most ``limit``."""
    return tuple(dict.fromkeys(v.strip() for v in (text or "").split(",") if v.strip()))[:limit]


class RecommendationService:
    """Reads published lists for the API; one instance per process.

    ``redis`` must carry socket and connect timeouts (``RECSYS_REDIS_TIMEOUT``): they are what
    bounds every call, and a timeout counts as Redis being unavailable.
    """

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis, self.settings = redis, settings
        self.keys = keys = Keys(settings.redis_prefix)
        self.guard = guard = Guard(settings.redis_retry_after)
        self.ids = RecommendationIds(settings.hmac_secret.get_secret_value())
        self.placements = load_placements(settings.placements_file)
        self.versions = Versions(redis, keys, guard, settings.item_cache_size)
        self.feeds = Feeds(redis, keys, guard, self.versions, settings)
        self.cursors = Cursors(redis, keys, guard, settings.cursor_ttl_seconds, settings.cursors_per_owner)
        self.live = LiveState()
        self.fallback = Fallback()
        self.fallback_since: float | None = None
        """Monotonic time of the first fallback answer of the current run of them (None: the last was not)."""
        self._active_version: str | None = None
        self._challenger_version: str | None = None
        self._experiment_id: str | None = None
        self.exposures = Exposures()
        self.exploration = Exploration()
        self.rng = np.random.default_rng()
        """Exploration's draws (a test may seed it)."""
        self._explores = frozenset(name for name, p in self.placements.items() if p.explore > 0)
        self._active_read_at = float("-inf")
        self._backlog, self._backlog_read_at = 0, float("-inf")
        self._reload: asyncio.Task[None] | None = None

    # ---- the active version and the live state ------------------------------------
    async def _active(self, fresh: bool = False) -> str | None:
        """The active version, re-read at most every ``RECSYS_ACTIVE_CACHE_SECONDS`` (or now, if ``fresh``).

        Serving a just-replaced version for up to that long is safe: a flip keeps the previous
        version complete in Redis (``RECSYS_KEEP_VERSIONS`` >= 2).
        """
        now = time.monotonic()
        if fresh or now - self._active_read_at > self.settings.active_cache_seconds:
            version, challenger, experiment = await self.guard(
                self.redis.mget(self.keys.active, self.keys.challenger, self.keys.experiment)
            )
            self._active_version = None if version is None else str(version)
            self._challenger_version = None if challenger is None else str(challenger)
            self._experiment_id = orjson.loads(experiment)["id"] if experiment and challenger else None
            self._active_read_at = now
        return self._active_version

    async def _sync_live(self) -> None:
        """Bring the live state up to date: at most one poll per ``RECSYS_LIVE_POLL_SECONDS``.

        A worker that never loaded the live hash loads it now; one that fell behind the stream's
        retention reloads it in the background and serves from its copy meanwhile.
        """
        live, now = self.live, time.monotonic()
        if not live.loaded:
            await self.reload_live()
        elif now - live.synced_at > self.settings.live_changes_retention_seconds / 2:
            if self._reload is None or self._reload.done():
                self._reload = asyncio.create_task(self._reload_quietly())
        elif now - live.checked_at >= self.settings.live_poll_seconds:
            await poll(live, self.redis, self.keys, self.guard, self.placements)

    async def reload_live(self) -> None:
        """Read the whole live state again (the hash in batches, the rules), then swap it in."""
        fresh = LiveState()
        await load(fresh, self.redis, self.keys, self.guard)
        await poll(fresh, self.redis, self.keys, self.guard, self.placements)
        self.live = fresh

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(RedisUnavailableError):  # the next request or tick tries again
            await self.reload_live()

    async def maintain(self, stop: asyncio.Event, tick: Callable[[], None] = lambda: None) -> None:
        """Until ``stop`` is set: keep the live state current between requests (an idle worker too) and the
        fallback copy fresh; ``tick`` runs after each round (the API updates its gauges there)."""
        every = max(self.settings.live_poll_seconds, 0.2)
        refreshed_at = float("-inf")
        while not stop.is_set():
            if time.monotonic() - refreshed_at >= self.settings.fallback_refresh_seconds:
                if await self.refresh_fallback():
                    refreshed_at = time.monotonic()
            else:
                with contextlib.suppress(RedisUnavailableError):
                    await self._sync_live()
            await self.flush_exposures()
            tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
        self.guard.reset()  # a worker that stops writes what it counted, even inside a retry pause
        await self.flush_exposures()

    async def flush_exposures(self) -> None:
        """Write the experiment's impressions and the exploration counts since the last round, and read back every
        worker's exploration counts when due (dropped on an error: at most once)."""
        with contextlib.suppress(RedisUnavailableError):
            await self.guard(self.exposures.flush(self.redis, self.keys))
        if self._explores:
            with contextlib.suppress(RedisUnavailableError):
                await self.guard(self.exploration.flush(self.redis, self.keys))

    # ---- live catalog and rules --------------------------------------------------
    async def change_items(self, changes: Mapping[str, Mapping[str, Any]]) -> int:
        """Apply live catalog changes (item -> fields); they show on the next request of every worker."""
        at = time.time()
        changed = await self.guard(change_items(self.redis, self.keys, changes, at))
        for item, fields in changes.items():  # this worker sees its own change at once
            if fields:
                self.live.apply(item, fields, at)
        return int(changed)

    def placement_of(self, name: str) -> Placement:
        """The named placement (:class:`UnknownPlacementError` if none)."""
        if name not in self.placements:
            raise UnknownPlacementError(f"no placement {name!r}; placements: {', '.join(self.placements)}")
        return self.placements[name]

    async def put_rules(self, name: str, rules: RuleSet, by: str) -> dict[str, Any]:
        """Replace a placement's rules (kept in its history)."""
        self.placement_of(name)
        entry = await self.guard(put_rules(self.redis, self.keys, name, rules, by))
        self.live.rules = {**self.live.rules, name: rules}  # this worker applies its own change at once
        return dict(entry)

    async def rules(self, name: str) -> dict[str, Any]:
        """A placement's rules: the stored entry, or the config's (``by: config``)."""
        entry = await self.guard(rules_in_force(self.redis, self.keys, name, self.placement_of(name).rules))
        return dict(entry)

    async def rules_history(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """A placement's past rule sets, newest first."""
        self.placement_of(name)
        return list(await self.guard(rules_history(self.redis, self.keys, name, limit)))

    async def overview(self) -> dict[str, Any]:
        """What an operator's console shows: the served version and the challenger, each placement with its rules
        in force, the last experiment report and the last export of each placement."""
        keys = self.keys
        active, challenger, experiment, report = await self.guard(
            self.redis.mget(keys.active, keys.challenger, keys.experiment, keys.experiment_report)
        )
        metas: list[Mapping[str, str]] = [
            await self.guard(self.redis.hgetall(keys.meta(str(v)))) if v else {}  # type: ignore[arg-type]
            for v in (active, challenger)
        ]
        exports = await self.guard(self.redis.hgetall(keys.exports))
        placements = [
            {
                "name": name,
                "feed": p.feed,
                "n": p.n,
                "explore": p.explore,
                "objective": p.objective,
                "sensitivity": p.sensitivity,
                "rules": await self.rules(name),
            }
            for name, p in self.placements.items()
        ]

        def version(v: Any, meta: Mapping[str, str]) -> dict[str, Any] | None:
            fields = ("model_version", "published_at", "users", "items")
            calibrated = meta.get("calibration") not in (None, "[]")  # revenue placements need it
            return (
                None
                if v is None
                else {"version": str(v), **{k: meta[k] for k in fields if k in meta}, "calibrated": calibrated}
            )

        return {
            "active": version(active, metas[0]),
            "challenger": version(challenger, metas[1]),
            "experiment": _json(experiment) if challenger and experiment else None,
            "experiment_report": _json(report) if report else None,
            "placements": placements,
            "exports": {name: _json(value) for name, value in sorted(exports.items())},
        }

    # ---- requests ----------------------------------------------------------------
    async def recommendations(
        self, user_id: str, n: int, exclude: str | None = None, category: str | None = None, details: bool = False
    ) -> Listing:
        """A user's top-n (the ``home`` placement): personalized, popular (cold user) or fallback (Redis down)."""
        query = PlacementQuery(
            user_id=user_id, n=n, exclude=frozenset(csv_ids(exclude, 1000)), category=category, details=details
        )
        return await self.placement("home", query)

    async def placement(self, name: str, q: PlacementQuery) -> Listing:
        """One placement's list for one request, under its rules, without unavailable or excluded items."""
        placement = self.placement_of(name)
        n = min(q.n or placement.n, self.settings.max_n)
        user = self._pseudonym(q.user_id)
        if q.cursor is not None and not Cursors.well_formed(q.cursor):
            raise PlacementQueryError("cursor is not one this API issued; start again with paginate=true")
        token = q.cursor or (Cursors.new() if q.paginate else None)
        try:
            version = await self._active()
            if version is None:
                return self._listing([], "popular", None, name)
            challenger = self._challenger_version
            if user is not None and challenger is not None and in_challenger(user, self.settings.experiment_share):
                version = challenger
            await self._sync_live()
            state = await self.versions.get(version)
            rules = self.live.rules.get(name, placement.rules).narrowed(q.category, q.max_per_category)
            excluded = q.exclude | await self.cursors.seen(token) if q.cursor and token else q.exclude
            feed = FeedQuery(user, q.item_id, q.cart, q.category, n)
            found = await self.feeds.lists(placement, state, self.live, feed)
            found = await self._by_revenue(placement, state, found)
            source = found.source
            items = await arranged(
                self.versions,
                self.live,
                state,
                found.lists,
                rules,
                2 * n if token else n,
                excluded,
                q.details,
                self._whys(found.whys),
            )
            explored: list[str] = []
            if placement.explore > 0:
                items, explored = await self._explored(placement, state, user, rules, items, n, excluded, q.details)
            if token:
                items = await self._page(token, q, user, items, n)
            listing = self._listing(items, source, state.model_version, name, token)
            if explored:
                shown = {i["item_id"] for i in items}
                picked = [i for i in explored if i in shown]
                self.exploration.show(str(state.model_version), listing.recommendation_id, picked)
            if user is not None and challenger is not None and self._experiment_id:
                self.exposures.add(self._experiment_id, str(state.model_version), user, _new_shown(items, explored))
        except RedisUnavailableError as exc:
            if q.cursor:
                raise CursorUnavailableError(
                    "Redis is unavailable: this cursor's next page cannot be told from the earlier ones; "
                    "retry, or start again with paginate=true"
                ) from exc
            return self._from_fallback(n, q, placement, name)
        self.fallback_since = None
        return listing

    async def bulk(self, name: str, users: Sequence[str], n: int, version: str) -> tuple[str, list[list[Item]]]:
        """Each pseudonym's first ``n`` of placement ``name`` from the published ``version``, under its rules,
        availability and diversity as served, with reasons; and that version's model version. A bulk export's
        lists: no challenger, exploration, paging or impression counted."""
        placement = self.placement_of(name)
        if placement.feed not in USER_FEEDS:
            raise PlacementQueryError(
                f"placement {name!r} ranks for an item or a cart ({placement.feed!r}), not a user"
            )
        await self._sync_live()
        state = await self.versions.get(version)
        rules = self.live.rules.get(name, placement.rules)

        async def one(user: str) -> list[Item]:
            found = await self.feeds.lists(placement, state, self.live, FeedQuery(user, None, (), None, n))
            found = await self._by_revenue(placement, state, found)
            whys = self._whys(found.whys)
            return await arranged(self.versions, self.live, state, found.lists, rules, n, frozenset(), False, whys)

        return str(state.model_version), list(await asyncio.gather(*(one(u) for u in users)))

    async def _by_revenue(self, placement: Placement, state: VersionState, found: Feed) -> Feed:
        """For a placement whose objective is revenue: the feed with its personalized list's calibrated head
        ordered by expected value (:mod:`~.revenue`), each item keeping the reason of the place it came from."""
        exponent = EXPONENTS[placement.sensitivity]
        if placement.objective != "revenue" or not exponent or not state.calibration:
            return found
        if found.source not in ("personalized", "session"):  # the popular fill of an unknown user stays as it is
            return found
        (ids, scores), why = found.lists[0], found.whys[0]
        head = ids[: len(state.calibration)]
        details = self.live.details(state, await self.versions.details(state, head))
        prices = {i: (details.get(i) or {}).get("price") for i in head}
        ordered = by_value(ids, scores, state.calibration, prices, exponent)
        at = {item: k for k, item in enumerate(ids)}
        kept = Why(why.kind, behind=lambda _, item: why.of(at[item], item))
        return Feed([ordered, *found.lists[1:]], found.source, [kept, *found.whys[1:]])

    async def _explored(
        self,
        placement: Placement,
        state: VersionState,
        user: str | None,
        rules: RuleSet,
        items: list[Item],
        n: int,
        excluded: AbstractSet[str],
        details: bool,
    ) -> tuple[list[Item], list[str]]:
        """``items`` with the placement's exploration slots of the first ``n`` filled (pins keep theirs), and the
        items placed there."""
        at = slots(n, placement.explore)
        if not at:
            return items, []
        model_version = str(state.model_version)
        self.exploration.watch(model_version)
        query = ExploreQuery(
            user,
            len(at),
            rules,
            excluded | {i["item_id"] for i in items},
            details,
            self.exploration.counts(model_version),
            self.rng,
        )
        picks = await self.feeds.explore(state, self.live, query)
        if not picks:
            return items, []
        pinned = set(active_pins(rules, datetime.now(UTC)).values())
        placed_items = placed(items, picks, at, lambda i: i["item_id"] in pinned)[: max(len(items), n)]
        kept = {i["item_id"] for i in placed_items}
        return placed_items, [i["item_id"] for i in picks if i["item_id"] in kept]  # a pin may push one past the end

    async def _page(self, token: str, q: PlacementQuery, user: str | None, items: list[Item], n: int) -> list[Item]:
        """The first ``n`` of ``items`` no earlier page of the cursor showed, recorded as shown."""
        if not q.cursor:  # a new token nobody else holds yet: its first page is recorded as it opens
            owner = user or f"anon:{self._pseudonym(q.client or 'unknown')}"
            await self.cursors.start(token, owner, [i["item_id"] for i in items[:n]])
            return items[:n]
        claimed = set(await self.cursors.claim(token, [i["item_id"] for i in items], n))
        return [i for i in items if i["item_id"] in claimed]

    def _pseudonym(self, value: str | None) -> str | None:
        return pseudonymize(value, self.settings.hmac_secret.get_secret_value()) if value else None

    def _listing(
        self, items: list[Item], source: str, model_version: str | None, placement: str, cursor: str | None = None
    ) -> Listing:
        return Listing(items, source, model_version, self.ids.issue(model_version, placement), cursor)

    async def similar(self, item_id: str, n: int, details: bool = False) -> Listing:
        """Items similar to ``item_id``, with the new items that join its list (empty for an unknown item)."""

        async def read(state: VersionState) -> tuple[List, Why]:
            keys = [self.keys.similar(state.version, item_id), self.keys.attached(state.version, item_id)]
            similar, attached = await self.guard(self.redis.mget(keys))
            return await self.feeds.with_new_items(state, self.live, item_id, decode(similar), decode(attached))

        return await self._one_list(read, "similar", n, details, {item_id}, None)

    async def popular(self, n: int, category: str | None = None, details: bool = False) -> Listing:
        """Popular items overall or in a category."""

        async def read(state: VersionState) -> tuple[List, Why]:
            return await self.versions.popular(state, category), POPULAR

        return await self._one_list(read, "popular", n, details, set(), category)

    async def _one_list(
        self,
        read: Callable[[VersionState], Awaitable[tuple[List, Why]]],
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
            await self._sync_live()
            state = await self.versions.get(version)
            found, why = await read(state)
            items = await arranged(
                self.versions, self.live, state, [found], RuleSet(), n, frozenset(), details, self._whys([why])
            )
        except RedisUnavailableError:
            query = PlacementQuery(n=n, exclude=frozenset(excluded), category=category, details=details)
            return self._from_fallback(n, query, None, source)
        self.fallback_since = None
        return self._listing(items, source, state.model_version, source)

    def _whys(self, whys: list[Why]) -> list[Why] | None:
        """The feed's reasons, or None when answers carry none (``RECSYS_REASONS=false``)."""
        return whys if self.settings.reasons else None

    def _from_fallback(self, n: int, q: PlacementQuery, placement: Placement | None, name: str) -> Listing:
        """The in-process popular lists, under the live state and rules the worker last knew (Redis is away)."""
        if self.fallback_since is None:
            self.fallback_since = time.monotonic()
        fb, live = self.fallback, self.live
        rules = (live.rules.get(name, placement.rules) if placement else RuleSet()).narrowed(
            q.category, q.max_per_category
        )
        info: Mapping[str, Mapping[str, Any] | None] = fb.details
        blocked: Any = frozenset()
        if fb.state is not None:  # what the worker last knew to be hidden or sold out stays out
            info, blocked = live.details(fb.state, fb.details), live.unavailable(fb.state)
        chosen = arrange(
            Candidates([fb.lists(q.category)]),
            info,
            rules,
            n,
            datetime.now(UTC),
            unavailable=blocked,
            excluded=q.exclude,
        )
        reasons = {i: POPULAR_REASON for i, _ in chosen} if self.settings.reasons else None
        return self._listing(entries(chosen, info, q.details, reasons), "fallback", fb.model_version, name)

    async def audience(self, target: Target, top: int) -> Answer:
        """The served version's stored audience of ``target``, kept current from now on (pending until the
        audience job computed it)."""
        version = await self._active(fresh=True)
        keys, most = self.keys, self.settings.audience_max_targets
        return await self.guard(ask(self.redis, keys, version, target, top, most))

    # ---- users and events ----------------------------------------------------------
    async def forget(self, user_id: str) -> ForgetReport:
        """Remove a user from Redis now and queue the store's part (raises RedisUnavailableError)."""
        user = str(self._pseudonym(user_id))

        def run() -> ForgetReport:  # a rare admin call: the sync client in a thread, generous timeout
            with client(self.settings, server_url(self.settings), socket_timeout=10) as r:
                return request_forget(r, self.keys, user)

        try:
            return await asyncio.to_thread(run)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise RedisUnavailableError(str(exc)) from exc

    async def accept_events(self, events: list[dict[str, Any]], role: str | None = None) -> int:
        """Validate like ingest; append all to the events stream, or raise :class:`InvalidEventsError`.

        The backlog keeps ``RECSYS_EVENT_BACKLOG_RESERVE`` of its room for keys of the write role: the
        shop's backend can post while a flood from a public key is refused.
        """
        limit = self.settings.max_events_per_request
        if len(events) > limit:
            raise InvalidEventsError([{"index": None, "reason": f"{len(events)} events is over the limit of {limit}"}])
        raw = as_text(events)
        rows = plain_rows(raw, self.settings)  # the common case in microseconds; the rest as ingest checks it
        if rows is None:
            checked = validate_events(events_frame(raw), self.settings)
            if len(checked.bad):
                reasons = zip(checked.bad["position"], checked.bad["reason"], strict=True)
                raise InvalidEventsError([{"index": int(p), "reason": str(r)} for p, r in reasons])
            rows = checked.good.drop_columns(["source", "ingest_id"]).to_pylist()
        room = self.settings.event_backlog_limit
        if not role_allows(role, "write"):
            room = int(room * (1 - self.settings.event_backlog_reserve))
        if await self.event_backlog(max_age=1.0) + len(rows) > room:
            raise BacklogFullError(
                f"{self._backlog} events wait for the drain (RECSYS_EVENT_BACKLOG_LIMIT"
                + ("" if room == self.settings.event_backlog_limit else ", less the write role's reserve")
                + ")"
            )
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:  # never trimmed here: the drain trims what it has acknowledged
            pipe.xadd(self.keys.events, {k: _field(v) for k, v in row.items() if v is not None})
        by_user = _session_items(rows) if self.settings.session_items else {}
        for user in by_user:  # the sessions are read in the same round trip (GETs: a cluster pipeline has no MGET)
            pipe.get(self.keys.session(user))
        clicks = self._clicks(rows) if self._explores else []
        for recommendation_id, item, _ in clicks:  # each explored item of a list counts its first click only
            pipe.srem(self.keys.explored(recommendation_id), item)
        done = await self.guard(pipe.execute())
        self._backlog += len(rows)
        for (_, item, model_version), removed in zip(clicks, done[len(done) - len(clicks) :], strict=True):
            if removed:
                self.exploration.click(model_version, item)
        if by_user:
            await self._remember(by_user, done[len(rows) : len(rows) + len(by_user)])
        return len(rows)

    def _clicks(self, rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        """(recommendation id, item, model version) of each view from a list this API signed on an exploring
        placement: a click if that list explored the item."""
        out = []
        for row in rows:
            if row.get("event_type") != "view" or not row.get("recommendation_id"):
                continue
            issued = self.ids.verify(str(row["recommendation_id"]))
            if issued is not None and issued.placement in self._explores:
                out.append((str(row["recommendation_id"]), str(row["item_id"]), issued.model_version))
        return out

    async def event_backlog(self, max_age: float = 0.0) -> int:
        """Events in the stream that no drain has acknowledged yet (the drain trims what it acknowledged).

        Re-read from Redis when older than ``max_age`` seconds: the event route checks it once a
        second per worker, the metrics route every scrape.
        """
        now = time.monotonic()
        if now - self._backlog_read_at > max_age:
            self._backlog, self._backlog_read_at = int(await self.guard(self.redis.xlen(self.keys.events))), now
        return self._backlog

    async def _remember(self, by_user: dict[str, list[str]], current: list[str | None]) -> None:
        """Push the accepted events' items onto their users' sessions (``current``: the sessions as read)."""
        pipe = self.redis.pipeline(transaction=False)
        for (user, items), old in zip(by_user.items(), current, strict=True):
            updated = updated_session(orjson.loads(old) if old else [], items, self.settings.session_items)
            pipe.set(self.keys.session(user), orjson.dumps(updated), ex=self.settings.session_ttl_seconds)
        await self.guard(pipe.execute())

    # ---- health ------------------------------------------------------------------
    def fallback_seconds(self) -> float:
        """How long this worker has answered only from its fallback (0: its last answer was not)."""
        return 0.0 if self.fallback_since is None else time.monotonic() - self.fallback_since

    def live_age(self) -> float:
        """Seconds since this worker's live state was last brought up to date (inf: never loaded)."""
        return time.monotonic() - self.live.synced_at if self.live.loaded else float("inf")

    async def ready(self) -> dict[str, Any]:
        """Readiness: Redis reachable, an active version present, and this worker really serving from it."""
        try:
            self.guard.reset()
            await self.guard(self.redis.ping())
            version = await self._active(fresh=True)
        except RedisUnavailableError as exc:
            return {"ready": False, "redis": "unreachable", "detail": str(exc)}
        if version is None:
            return {"ready": False, "redis": "ok", "detail": "nothing published yet: run `recsys publish`"}
        state = {"redis": "ok", "version": version, "model_version": await self._model_version(version)}
        stuck, age = self.fallback_seconds(), self.live_age()
        if stuck > self.settings.fallback_unready_seconds:
            detail = f"answering from the fallback for {stuck:.0f} s while Redis answers: see this worker's log"
            return {"ready": False, **state, "detail": detail}
        if age > self.settings.live_stale_seconds:
            detail = f"the live catalog and rules are {age:.0f} s old (RECSYS_LIVE_STALE_SECONDS)"
            return {"ready": False, **state, "detail": detail}
        return {"ready": True, **state}

    async def _model_version(self, version: str) -> str | None:
        try:
            return (await self.versions.get(version)).model_version
        except RedisUnavailableError:
            return None

    async def refresh_fallback(self) -> bool:
        """Copy the active version's popular lists into memory; False when Redis is unavailable."""
        try:
            self.guard.reset()
            version = await self._active(fresh=True)
            if version is None or version == self.fallback.version:
                return version is not None
            self.fallback = await refreshed(self.redis, self.keys, self.guard, self.versions, version)
        except RedisUnavailableError:
            return False
        return True


def _json(value: str | bytes) -> Any:
    """A stored JSON value, or ``{"unreadable": true}`` (a value written by another release, or garbled)."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return {"unreadable": True}


def _new_shown(items: list[Item], explored: list[str]) -> list[str]:
    """The new items of an answer: those it shows as ``new`` or in an exploration slot."""
    picked = set(explored)
    return [
        i["item_id"]
        for i in items
        if i["item_id"] in picked or (i.get("reason") or {}).get("kind") in ("new", "explore")
    ]


def _session_items(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each user's items of ``rows``, oldest first."""
    by_user: dict[str, list[str]] = {}
    for row in sorted(rows, key=lambda r: r["timestamp"]):
        by_user.setdefault(str(row["user_id"]), []).append(str(row["item_id"]))
    return by_user


def _field(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)
