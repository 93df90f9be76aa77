"""Draining the API's event stream into the store, exactly once.

The API appends validated, pseudonymized events to ``{prefix}:events``. A drain reads them as a
consumer group, stores them with the same dedupe and commit as a file ingest, and acknowledges
only after the Iceberg commit. A drain that dies before acknowledging leaves its entries
pending; the next drain reads those first, finds them already stored (same ``event_id``) and
acknowledges them: nothing is lost and nothing is stored twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import redis

from recommender.config import Settings
from recommender.data.catalog import changed_rows
from recommender.data.events import EVENT_SCHEMA, raw_json
from recommender.data.ingest import IngestSummary, ingest
from recommender.data.store import Store
from recommender.online.keys import Keys
from recommender.progress import ProgressFn, no_progress

GROUP = "ingest"
STORED_FIELDS = [f.name for f in EVENT_SCHEMA if f.name not in ("source", "ingest_id")]


def _ensure_group(r: redis.Redis, stream: str) -> None:
    try:
        r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _batch(reply: object, stream: str) -> list[tuple[str, dict[str, str]]]:
    """Entries of one XREADGROUP reply (RESP3 dict or RESP2 list)."""
    if not reply:
        return []
    rows = reply[stream][0] if isinstance(reply, dict) else reply[0][1]  # type: ignore[index]
    return [(str(i), dict(f or {})) for i, f in rows]


def _read(r: redis.Redis, stream: str, consumer: str, limit: int) -> list[tuple[str, dict[str, str]]]:
    """This consumer's pending entries (a drain that died before acking) first, then new ones."""
    entries: list[tuple[str, dict[str, str]]] = []
    last = "0"
    while len(entries) < limit:
        batch = _batch(r.xreadgroup(GROUP, consumer, {stream: last}, count=min(10_000, limit - len(entries))), stream)
        if not batch:
            break
        entries += batch
        last = batch[-1][0]
    while len(entries) < limit:
        batch = _batch(r.xreadgroup(GROUP, consumer, {stream: ">"}, count=min(10_000, limit - len(entries))), stream)
        if not batch:
            break
        entries += batch
    return entries


def _table(entries: list[tuple[str, dict[str, str]]]) -> tuple[pa.Table, pd.DataFrame]:
    """Stream entries as events (already validated by the API); entries that do not parse are quarantined."""
    frame = pd.DataFrame([f for _, f in entries], columns=STORED_FIELDS).assign(position=range(len(entries)))
    ts = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    quantity = pd.to_numeric(frame["quantity"], errors="coerce")
    price = pd.to_numeric(frame["price"], errors="coerce")
    broken = ts.isna() | frame[["event_id", "user_id", "item_id", "event_type"]].isna().any(axis=1)
    good = frame[~broken]
    table = pa.Table.from_pandas(
        pd.DataFrame(
            {
                **{c: good[c] for c in ("event_id", "user_id", "item_id", "event_type")},
                "timestamp": ts[~broken].astype("datetime64[us, UTC]"),
                "session_id": good["session_id"],
                "quantity": quantity[~broken].astype("Int32"),
                "price": price[~broken],
                "recommendation_id": good["recommendation_id"],
                "source": None,
                "ingest_id": None,
            }
        ),
        schema=EVENT_SCHEMA,
        preserve_index=False,
    )
    bad_rows = frame[broken]
    bad = pd.DataFrame(
        {
            "position": bad_rows["position"].astype("Int64").to_numpy(),
            "reason": "malformed_stream_entry",
            "user_id": bad_rows["user_id"].to_numpy(),
            "raw": raw_json(bad_rows.drop(columns=["position"])),
        }
    )
    return table, bad


def drain_stream(
    settings: Settings,
    r: redis.Redis,
    *,
    store: Store | None = None,
    consumer: str = "ingest-1",
    limit: int = 1_000_000,
    progress: ProgressFn = no_progress,
) -> IngestSummary:
    """Store up to ``limit`` stream entries as one snapshot, then acknowledge them."""
    stream = Keys(settings.redis_prefix).events
    _ensure_group(r, stream)
    entries = _read(r, stream, consumer, limit)
    progress("stream", len(entries), None)
    with ingest(f"redis-stream:{stream}", settings, store, progress, read=len(entries)) as current:
        if entries:
            current.add(*_table(entries))
        summary = current.commit()
    if entries:
        r.xack(stream, GROUP, *[i for i, _ in entries])
        trim_acknowledged(r, stream)
    return summary


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def trim_acknowledged(r: redis.Redis, stream: str) -> int:
    """Remove the entries the group has acknowledged, and only those; returns how many went.

    Everything below the group's oldest pending entry (or, with none pending, up to its last
    delivered one) was delivered and acknowledged: ``XTRIM MINID`` drops exactly that, so an
    entry no drain has stored yet is never trimmed, however long the stream grows.
    """
    groups = {str(g["name"]): g for g in r.xinfo_groups(stream)}
    if GROUP not in groups:
        return 0
    pending = r.xpending(stream, GROUP)
    last = str(groups[GROUP]["last-delivered-id"])
    threshold = str(pending["min"]) if pending["pending"] else _next_id(last)
    return int(r.xtrim(stream, minid=threshold, approximate=False))


def drain_catalog(settings: Settings, r: redis.Redis, *, store: Store | None = None, limit: int = 100_000) -> int:
    """Store up to ``limit`` new live catalog changes in the items table; returns how many.

    Reads the stream after the position the last drain recorded, stores, then records the new position;
    storing is idempotent (a change older than its item's stored row is skipped), so a drain that dies
    before recording loses nothing and the rerun stores the same. The stream keeps stored changes for
    ``RECSYS_LIVE_CHANGES_RETENTION_SECONDS`` more: API workers read it to follow the live catalog.
    """
    keys = Keys(settings.redis_prefix)
    stored = r.get(keys.catalog_changes_stored)
    entries: Any = r.xrange(keys.catalog_changes, min=f"({stored!s}" if stored else "-", count=limit)
    if entries:
        rows = [dict(f or {}) for _, f in entries]
        changes = [(str(f["item_id"]), orjson.loads(f["fields"]), datetime.fromisoformat(str(f["at"]))) for f in rows]
        (store or Store(settings)).upsert_items(lambda current: changed_rows(current, changes))
        stored = str(entries[-1][0])
        r.set(keys.catalog_changes_stored, stored)
    if stored:
        _trim_changes(r, keys.catalog_changes, str(stored), settings.live_changes_retention_seconds)
    return len(entries)


def _trim_changes(r: redis.Redis, stream: str, stored: str, retention: float) -> int:
    """Drop the changes both stored and older than ``retention`` (by the Redis server's clock)."""
    seconds, micros = r.time()
    oldest_kept = int(seconds * 1000 + micros // 1000 - retention * 1000)
    threshold = min(_id(_next_id(stored)), (oldest_kept, 0))
    return int(r.xtrim(stream, minid=f"{threshold[0]}-{threshold[1]}", approximate=False))


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
