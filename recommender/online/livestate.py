"""One API worker's copy of the live state: catalog changes and rules, kept current at the cost of what changed.

The catalog's changes come from the ``catalog:changes`` stream, read from the worker's last position
(one ``XRANGE`` per poll, nothing when nothing changed); the whole ``catalog:live`` hash is read only
when the worker starts or has fallen too far behind, in ``HSCAN`` batches, outside the requests.
Rules are re-read only when ``rules:rev`` moved. Publishing compacts the live hash (fields every kept
version already holds) and records the cut-off in ``catalog:live:cutoff``; the worker drops the same
fields from its copy, so memory follows the changes since the oldest kept version, not all history.

The changes apply per version: a field counts for a version only when it is newer than the moment
that version read the catalog (minus :data:`~recommender.online.live.CLOCK_MARGIN_SECONDS`).
:meth:`LiveState.unavailable` and :meth:`LiveState.details` answer for one item at a time, so a
change costs one dictionary update and nothing is rebuilt.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from recommender.online.guard import Guard
from recommender.online.keys import Keys
from recommender.online.live import CLOCK_MARGIN_SECONDS, Overrides, parse_live
from recommender.online.placements import Placement
from recommender.online.rules import RuleSet
from recommender.online.versions import SCAN_COUNT, Item, VersionState

_GENERATIONS = itertools.count(1)
STREAM_BATCH = 1000
"""Changes read per XRANGE; a poll reads at most :data:`MAX_BATCHES_PER_POLL` of them."""
MAX_BATCHES_PER_POLL = 20
AVAILABILITY = frozenset({"in_stock", "hidden", "price"})
"""The live fields that change whether and how an item shows, not what it is: a price change alone does not
encode an item again for the content model (a later content change, or the next publish, takes its bucket)."""


@dataclass
class LiveState:
    """Overrides (item -> field -> (value, time)), the rules in force, and where the worker is in the stream."""

    overrides: Overrides = field(default_factory=dict)
    rules: dict[str, RuleSet] = field(default_factory=dict)
    position: str | None = None
    """The last stream id applied (None: not loaded yet)."""
    rules_rev: str | None = None
    cutoff: float = float("-inf")
    synced_at: float = float("-inf")
    """Monotonic time of the last successful sync."""
    checked_at: float = float("-inf")
    """Monotonic time of the last poll (successful or not)."""
    generation: int = field(default_factory=lambda: next(_GENERATIONS))
    changes: dict[str, int] = field(default_factory=dict)
    """item -> how many changes this copy applied to it: with the generation, what rule verdicts are valid for."""
    content_log: list[str] = field(default_factory=list)
    """Items whose content (anything but :data:`AVAILABILITY`) changed, in the order applied: what new-item
    indexes (:class:`~recommender.online.content.LiveContent`) take in from their last position."""
    content_epoch: int = 0
    """Moves when :meth:`prune` rewrites ``content_log`` (the indexes take it in again from the start)."""

    @property
    def loaded(self) -> bool:
        return self.position is not None

    def apply(self, item: str, fields: Mapping[str, Any], at: float) -> None:
        """One change: each field takes ``(value, at)`` unless the copy holds a newer one."""
        self.changes[item] = self.changes.get(item, 0) + 1
        if not AVAILABILITY.issuperset(fields):
            self.content_log.append(item)
        current = self.overrides.setdefault(item, {})
        for name, value in fields.items():
            old = current.get(name)
            if old is None or old[1] <= at:
                current[name] = (value, at)

    def prune(self, cutoff: float) -> None:
        """Drop the fields older than ``cutoff`` (publishing compacted them away: every kept version has them)."""
        if cutoff <= self.cutoff:
            return
        self.cutoff = cutoff
        for item in list(self.overrides):
            fields = {k: v for k, v in self.overrides[item].items() if v[1] >= cutoff}
            if fields:
                self.overrides[item] = fields
            else:
                del self.overrides[item]
        self.relist()

    def relist(self) -> None:
        """List the items whose content changed again, from the overrides kept (the indexes take them in anew)."""
        self.content_log = [i for i, fields in self.overrides.items() if not AVAILABILITY.issuperset(fields)]
        self.content_epoch += 1

    def changed(self, state: VersionState, item: str) -> dict[str, Any] | None:
        """The live fields of ``item`` newer than what ``state`` read, as {field: value} (None: none)."""
        fields = self.overrides.get(item)
        if not fields:
            return None
        since = state.read_at - CLOCK_MARGIN_SECONDS
        newer = {k: v for k, (v, at) in fields.items() if at > since}
        return newer or None

    def is_unavailable(self, state: VersionState, item: str) -> bool:
        """Out of stock or hidden in ``state``, with the live changes newer than it applied."""
        fields = self.overrides.get(item)
        if fields:
            since = state.read_at - CLOCK_MARGIN_SECONDS
            stock, hidden = fields.get("in_stock"), fields.get("hidden")
            sold_out = stock[0] is False if stock is not None and stock[1] > since else item in state.out_of_stock
            concealed = bool(hidden[0]) if hidden is not None and hidden[1] > since else item in state.hidden
            return sold_out or concealed
        return item in state.out_of_stock or item in state.hidden

    def unavailable(self, state: VersionState) -> Unavailable:
        """The items ``state`` must not show, as a container (membership per item, nothing built)."""
        return Unavailable(self, state)

    def details(self, state: VersionState, published: Mapping[str, Item | None]) -> Details:
        """``published`` details of ``state`` with the live changes on top, item by item, as asked for."""
        return Details(self, state, published)


class Unavailable(Container[str]):
    """``item in unavailable``: :meth:`LiveState.is_unavailable` for one version."""

    __slots__ = ("blocked", "live", "overrides", "state")

    def __init__(self, live: LiveState, state: VersionState) -> None:
        self.live, self.state, self.overrides = live, state, live.overrides
        self.blocked = state.blocked or (state.out_of_stock | state.hidden)

    def __contains__(self, item: object) -> bool:
        if item not in self.overrides:  # the common case: no live change, the version's own sets decide
            return item in self.blocked
        return self.live.is_unavailable(self.state, str(item))


class Details(Mapping[str, Mapping[str, Any] | None]):
    """Published catalog details with the live changes on top (read, never modify: no copy without changes)."""

    def __init__(self, live: LiveState, state: VersionState, published: Mapping[str, Item | None]) -> None:
        self.live, self.state, self.published = live, state, published

    def __getitem__(self, item_id: str) -> Mapping[str, Any] | None:
        return self.get(item_id)

    def get(self, item_id: str, default: Any = None) -> Mapping[str, Any] | None:
        """As ``__getitem__`` (never a KeyError): the rules ask once per candidate."""
        published = self.published.get(item_id)
        changed = self.live.changed(self.state, item_id)
        if not changed:
            return published
        return {**(published or {}), **changed}

    def __iter__(self) -> Iterator[str]:
        return iter(self.published)

    def __len__(self) -> int:
        return len(self.published)


def _entry_time(fields: Mapping[str, Any]) -> float:
    """The change's time: ``ts`` (unix seconds), or the ISO ``at`` of entries written before it was added."""
    ts = fields.get("ts")
    return float(ts) if ts is not None else datetime.fromisoformat(str(fields["at"])).timestamp()


async def load(live: LiveState, redis: Redis, keys: Keys, guard: Guard) -> None:
    """Read the whole live hash (HSCAN batches) from a stream position taken first; then it is in sync."""
    newest = await guard(redis.xrevrange(keys.catalog_changes, count=1))
    position = str(newest[0][0]) if newest else "0-0"
    cutoff = await guard(redis.get(keys.catalog_live_cutoff))
    raw: dict[Any, Any] = {}
    cursor: Any = 0
    while True:
        scanned: Any = await guard(redis.hscan(keys.catalog_live, cursor, count=SCAN_COUNT))
        cursor, batch = scanned
        raw.update(batch)
        if not int(cursor):
            break
    live.overrides = parse_live(raw)
    live.cutoff = float("-inf")
    live.prune(float(cutoff) if cutoff else float("-inf"))
    live.relist()
    live.position = position
    await _read_changes(live, redis, keys, guard)  # what changed while the hash was read


async def poll(live: LiveState, redis: Redis, keys: Keys, guard: Guard, placements: Mapping[str, Placement]) -> None:
    """Apply what changed since the last poll: new stream entries, a new compaction cut-off, new rules."""
    live.checked_at = time.monotonic()
    rules_rev, cutoff = await guard(redis.mget(keys.rules_rev, keys.catalog_live_cutoff))
    rules_rev = None if rules_rev is None else str(rules_rev)
    await _read_changes(live, redis, keys, guard)
    if cutoff:
        live.prune(float(cutoff))
    if rules_rev != live.rules_rev or not live.rules:
        live.rules = await _rules(redis, keys, guard, placements)
        live.rules_rev = rules_rev
    live.synced_at = time.monotonic()


async def _read_changes(live: LiveState, redis: Redis, keys: Keys, guard: Guard) -> None:
    for _ in range(MAX_BATCHES_PER_POLL):
        entries: Any = await guard(redis.xrange(keys.catalog_changes, min=f"({live.position}", count=STREAM_BATCH))
        for entry_id, fields in entries:
            live.apply(str(fields["item_id"]), orjson.loads(fields["fields"]), _entry_time(fields))
            live.position = str(entry_id)
        if len(entries) < STREAM_BATCH:
            return


async def _rules(redis: Redis, keys: Keys, guard: Guard, placements: Mapping[str, Placement]) -> dict[str, RuleSet]:
    names = list(placements)
    pipe = redis.pipeline(transaction=False)  # GETs: a cluster pipeline refuses MGET across slots
    for name in names:
        pipe.get(keys.rules(name))
    stored = await guard(pipe.execute())
    return {
        name: RuleSet.model_validate(orjson.loads(value)["rules"]) if value else placements[name].rules
        for name, value in zip(names, stored, strict=True)
    }
