"""What a shop changes between publishes: the live catalog and the merchandising rules.

A catalog change (``PATCH /v1/items/{id}``) is one MULTI/EXEC: every changed field goes into
``{prefix}:catalog:live`` as ``[value, unix time]`` and the change onto ``{prefix}:catalog:changes``.
Each API worker reads that stream from its last position (``RECSYS_LIVE_POLL_SECONDS``), so a
sold-out item leaves every answer within a poll, and a change costs each worker what changed
(:mod:`recommender.online.livestate`). The catalog drain stores the changes in the items table (the
next training sees them) and trims the stream only below ``RECSYS_LIVE_CHANGES_RETENTION_SECONDS``,
so a worker that polls within that time never misses one. A rules change bumps ``rules:rev``.

The live hash is compacted at every publish (:func:`compact_live`): a field older than the catalog
every kept version read is already in all of them, and goes.

A published version carries the catalog as it was when it was published (its ``out_of_stock``
and ``hidden`` sets, and ``catalog_read_at`` in its meta); a live field applies on top when it is
newer than that. Publishing merges the live fields into what it writes the same way (newest wins
against the item's row), so a version never brings back a change the shop made before it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recommender.online.keys import Keys
from recommender.online.rules import RuleSet

ATTRIBUTE_NAME = r"^[a-z][a-z0-9_]{0,31}$"
RESERVED = frozenset(
    {"item_id", "title", "category", "price", "in_stock", "hidden", "attributes", "updated_at", "score", "reason"}
)
"""The catalog's own fields and what an answer's item carries: no attribute takes their names."""
Whole = Annotated[int, Field(ge=-(2**53), le=2**53)]
"""An attribute's integer: one JSON (and JavaScript) holds exactly."""
Attribute = (
    Annotated[str, Field(max_length=256)]
    | Whole
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[list[Annotated[str, Field(max_length=256)] | Whole], Field(max_length=16)]
)
SCAN_COUNT = 10_000
COMPACT_BATCH = 1000
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
    attributes: dict[Annotated[str, Field(pattern=ATTRIBUTE_NAME)], Attribute] | None = Field(
        default=None,
        max_length=32,
        description="Other attributes (brand, colour, tags, ...): what rules test and the content model reads.",
    )

    @field_validator("attributes")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        taken = sorted(set(value or ()) & RESERVED)
        if taken:
            raise ValueError(f"attributes {taken} are catalog fields of their own: set them beside attributes")
        return value

    def fields(self) -> dict[str, Any]:
        """The fields this change sets (an explicit null is not a change), the attributes among them."""
        fields = {k: v for k, v in self.model_dump(exclude_unset=True).items() if v is not None}
        return {**fields.pop("attributes", {}), **fields}


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
        entry = {"item_id": item, "fields": orjson.dumps(dict(fields)).decode(), "at": stamp, "ts": repr(at)}
        pipe.xadd(keys.catalog_changes, entry)
        changed += 1
    if changed:
        await pipe.execute()
    return changed


def read_live(r: Any, keys: Keys) -> Overrides:
    """The whole live hash, read in HSCAN batches (one HGETALL of a big hash would block Redis)."""
    return parse_live(dict(r.hscan_iter(keys.catalog_live, count=SCAN_COUNT)))


COMPACT = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed
"""
"""Delete each field only if it still holds the value read: a change made meanwhile stays."""


def compact_live(r: Any, keys: Keys, cutoff: float) -> int:
    """Remove the live fields older than ``cutoff`` and record it (workers drop the same); returns how many went.

    ``cutoff`` must be at most the catalog-read time of every version still served or being written,
    minus :data:`CLOCK_MARGIN_SECONDS`: those versions hold every field older than that already.
    """
    script = r.register_script(COMPACT)
    removed, stale = 0, []
    for name, value in r.hscan_iter(keys.catalog_live, count=SCAN_COUNT):
        if float(orjson.loads(value)[1]) < cutoff:
            stale += [name, value]
        if len(stale) >= 2 * COMPACT_BATCH:
            removed += int(script(keys=[keys.catalog_live], args=stale))
            stale = []
    if stale:
        removed += int(script(keys=[keys.catalog_live], args=stale))
    current = r.get(keys.catalog_live_cutoff)
    if current is None or float(current) < cutoff:
        r.set(keys.catalog_live_cutoff, repr(cutoff))
    return removed


def newer_than(overrides: Overrides, since: Mapping[str, float] | float) -> dict[str, dict[str, Any]]:
    """The live fields newer than ``since`` (one time, or each item's row time), as {item: {field: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item, fields in overrides.items():
        cutoff = since if isinstance(since, float | int) else since.get(item, float("-inf"))
        newer = {k: v for k, (v, at) in fields.items() if at > cutoff}
        if newer:
            out[item] = newer
    return out


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
    pipe.incr(keys.rules_rev)
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
