"""What a shop changes between publishes: the live catalog and the merchandising rules.

A catalog change (``PATCH /v1/items/{id}``) is one MULTI/EXEC: every changed field goes into
``{prefix}:catalog:live`` as ``[value, unix time]``, the change onto ``{prefix}:catalog:changes``
(the drain stores it in the items table, so the next training sees it) and ``{prefix}:live:rev``
is bumped. Each API worker polls that counter (``RECSYS_LIVE_POLL_SECONDS``) and, when it moved,
re-reads the live fields and the rules: a sold-out item leaves every answer within a poll.

A published version carries the catalog as it was when it was published (its ``out_of_stock``
and ``hidden`` sets, and ``catalog_read_at`` in its meta); a live field applies on top when it is
newer than that. Publishing merges the live fields into what it writes the same way (newest wins
against the item's row), so a version never brings back a change the shop made before it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from recommender.online.keys import Keys
from recommender.online.rules import RuleSet

LIVE_FIELDS = ("in_stock", "hidden", "price", "category", "title")
CLOCK_MARGIN_SECONDS = 5.0
"""A published version counts live fields up to this much older than when it read them as possibly
unseen (clock skew between API workers and the publisher), and applies them again: same values."""


class ItemChange(BaseModel):
    """Fields of one catalog item to change; the ones left out stay as they are."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"in_stock": False}, {"price": 17.5, "hidden": False}]}
    )

    in_stock: bool | None = None
    hidden: bool | None = None
    price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    category: str | None = Field(default=None, min_length=1, max_length=256)
    title: str | None = Field(default=None, max_length=1024)

    def fields(self) -> dict[str, Any]:
        """The fields this change sets (an explicit null is not a change)."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}


Overrides = dict[str, dict[str, tuple[Any, float]]]
"""item_id -> field -> (value, unix time of the change)."""


def parse_live(raw: Mapping[Any, Any]) -> Overrides:
    """The ``catalog:live`` hash as {item: {field: (value, time)}}."""
    out: Overrides = {}
    for name, value in raw.items():
        fld, _, item = str(name).partition(":")
        data, at = orjson.loads(value)
        out.setdefault(item, {})[fld] = (data, float(at))
    return out


async def change_items(r: Any, keys: Keys, changes: Mapping[str, Mapping[str, Any]], now: float | None = None) -> int:
    """Record live changes of many items in one transaction; returns how many items changed."""
    at = time.time() if now is None else now
    stamp = datetime.fromtimestamp(at, UTC).isoformat()
    pipe = r.pipeline(transaction=True)
    changed = 0
    for item, fields in changes.items():
        if not fields:
            continue
        pipe.hset(keys.catalog_live, mapping={f"{k}:{item}": orjson.dumps([v, at]).decode() for k, v in fields.items()})
        pipe.xadd(keys.catalog_changes, {"item_id": item, "fields": orjson.dumps(dict(fields)).decode(), "at": stamp})
        changed += 1
    pipe.incr(keys.live_rev)
    await pipe.execute()
    return changed


def newer_than(overrides: Overrides, since: Mapping[str, float] | float) -> dict[str, dict[str, Any]]:
    """The live fields newer than ``since`` (one time, or each item's row time), as {item: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item, fields in overrides.items():
        cutoff = since if isinstance(since, float | int) else since.get(item, float("-inf"))
        newer = {k: v for k, (v, at) in fields.items() if at > cutoff}
        if newer:
            out[item] = newer
    return out


def unavailable(
    out_of_stock: frozenset[str], hidden: frozenset[str], changed: Mapping[str, Mapping[str, Any]]
) -> frozenset[str]:
    """Items that must not be shown: out of stock or hidden, with the live changes applied."""
    gone = set(out_of_stock | hidden)
    for item, fields in changed.items():
        sold_out = fields["in_stock"] is False if "in_stock" in fields else item in out_of_stock
        concealed = bool(fields["hidden"]) if "hidden" in fields else item in hidden
        (gone.add if sold_out or concealed else gone.discard)(item)
    return frozenset(gone)


# ---- rules ---------------------------------------------------------------------------
def rules_entry(rules: RuleSet, by: str, at: datetime | None = None) -> dict[str, Any]:
    """One history entry: the rule set, when and by whom."""
    return {
        "rules": rules.model_dump(mode="json", exclude_none=True),
        "at": (at or datetime.now(UTC)).isoformat(),
        "by": by,
    }


async def put_rules(r: Any, keys: Keys, placement: str, rules: RuleSet, by: str) -> dict[str, Any]:
    """Replace ``placement``'s rules and keep the change in its history (one transaction)."""
    entry = rules_entry(rules, by)
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.rules(placement), orjson.dumps(entry))
    pipe.lpush(keys.rules_history(placement), orjson.dumps(entry))
    pipe.incr(keys.live_rev)
    await pipe.execute()
    return entry


async def rules_in_force(r: Any, keys: Keys, placement: str, configured: RuleSet) -> dict[str, Any]:
    """The stored entry of ``placement``, or its ``configured`` rules as an entry ``by: config``."""
    value = await r.get(keys.rules(placement))
    if value is not None:
        return dict(orjson.loads(value))
    return {"rules": configured.model_dump(mode="json", exclude_none=True), "at": None, "by": "config"}


async def rules_history(r: Any, keys: Keys, placement: str, limit: int = 100) -> list[dict[str, Any]]:
    """The last ``limit`` rule sets of ``placement``, newest first."""
    return [orjson.loads(v) for v in await r.lrange(keys.rules_history(placement), 0, limit - 1)]


@dataclass
class LiveView:
    """One API worker's copy of the live state for the version it serves."""

    rev: str | None = None
    version: str | None = None
    read_at: float = float("-inf")
    out_of_stock: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()
    overrides: Overrides = field(default_factory=dict)
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: frozenset[str] = frozenset()
    rules: dict[str, RuleSet] = field(default_factory=dict)
    repurchase: dict[str, float] = field(default_factory=dict)
    checked_at: float = -1e9

    def rebuilt(self) -> LiveView:
        """Recompute what follows from the version's sets and the live fields."""
        self.changed = newer_than(self.overrides, self.read_at - CLOCK_MARGIN_SECONDS)
        self.unavailable = unavailable(self.out_of_stock, self.hidden, self.changed)
        return self

    def details(self, item_id: str, published: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """An item's catalog fields with the live changes applied (read, never modify: no copy without changes)."""
        live = self.changed.get(item_id)
        if not live:
            return published
        return {**(published or {}), **live}
