"""Ingest: read -> validate -> pseudonymize -> deduplicate -> one atomic Iceberg commit.

The summary always reconciles: ``read == stored + duplicates + quarantined``.
Everything is read and validated before the first write, so a file that cannot be
parsed writes nothing, and a crash before the commit leaves the last snapshot as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recommender.catalog import read_catalog_csv
from recommender.config import Settings
from recommender.events import QUARANTINE_SCHEMA, validate_events
from recommender.privacy import pseudonymize
from recommender.progress import ProgressFn, no_progress
from recommender.readers import Malformed, RawBatch, read_events
from recommender.store import Store


@dataclass
class IngestSummary:
    """What an ingest did; reconciles exactly."""

    ingest_id: str
    source: str
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    forgotten: int = 0
    """Rows of users who asked to be forgotten (tombstoned): dropped, never stored."""
    quarantine_new: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    snapshot_id: int | None = None
    previous_snapshot_id: int | None = None
    catalog_items: int | None = None
    catalog_quarantined: int | None = None
    seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        """True when every row read is accounted for."""
        return self.read == self.stored + self.duplicates + self.quarantined + self.forgotten

    def to_dict(self) -> dict[str, object]:
        """Plain fields plus ``reconciles``."""
        return {**asdict(self), "reconciles": self.reconciles}

    def to_json(self) -> str:
        """One machine-readable line."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _quarantine_rows(bad: pd.DataFrame, kind: str, source: str, ingest_id: str) -> pa.Table:
    """Quarantine rows with a stable id (kind+source+position+reason+raw) for idempotency."""
    now = datetime.now(UTC)
    keys = (
        kind
        + "\x1f"
        + source
        + "\x1f"
        + bad["position"].astype("string").fillna("")
        + "\x1f"
        + bad["reason"].astype("string")
        + "\x1f"
        + bad["raw"].astype("string")
    )
    frame = pd.DataFrame(
        {
            "quarantine_id": [hashlib.blake2b(k.encode(), digest_size=16).hexdigest() for k in keys],
            "kind": kind,
            "reason": bad["reason"].to_numpy(),
            "position": bad["position"].astype("Int64").to_numpy(),
            "user_id": bad["user_id"].to_numpy(),
            "raw": bad["raw"].to_numpy(),
            "source": source,
            "ingest_id": ingest_id,
            "quarantined_at": pd.Timestamp(now),
        }
    )
    return pa.Table.from_pandas(frame, schema=QUARANTINE_SCHEMA, preserve_index=False)


def _malformed_frame(rows: list[Malformed], secret: str) -> pd.DataFrame:
    """Parser-rejected rows, with the raw user id replaced by its pseudonym."""
    users = [pseudonymize(m.user, secret) if m.user else None for m in rows]
    texts = [m.text.replace(m.user, u, 1) if m.user and u else m.text for m, u in zip(rows, users, strict=True)]
    return pd.DataFrame(
        {
            "position": pd.array([m.line for m in rows], dtype="Int64"),
            "reason": "malformed_row",
            "user_id": users,
            "raw": [json.dumps({"line": t}, ensure_ascii=False) for t in texts],
        }
    )


def _new_only(rows: pa.Table, key: str, existing: pa.ChunkedArray) -> pa.Table:
    """Rows whose ``key`` is not in ``existing`` and first of their key within ``rows``."""
    if rows.num_rows == 0:
        return rows
    fresh = rows.filter(pc.invert(pc.is_in(rows.column(key), value_set=existing.combine_chunks())))
    keys = pd.Series(fresh.column(key).to_numpy(zero_copy_only=False))
    return fresh.take(pa.array((~keys.duplicated()).to_numpy().nonzero()[0]))


def ingest_batches(
    batches: Iterable[RawBatch],
    source: str,
    settings: Settings,
    *,
    store: Store | None = None,
    progress: ProgressFn = no_progress,
    now: datetime | None = None,
) -> IngestSummary:
    """Validate and store raw batches as one ingest (one events snapshot)."""
    started = time.monotonic()
    store = store or Store(settings)
    summary = IngestSummary(ingest_id=uuid.uuid4().hex, source=source)
    secret = settings.hmac_secret.get_secret_value()
    goods: list[pa.Table] = []
    bads: list[pd.DataFrame] = []
    for batch in batches:
        checked = validate_events(batch.frame, settings, now)
        goods.append(checked.good)
        bads.append(checked.bad)
        if batch.malformed:
            bads.append(_malformed_frame(batch.malformed, secret))
        summary.read += batch.count
        progress("validate", summary.read, None)
    return store_checked(summary, goods, bads, store, progress, started)


def store_checked(
    summary: IngestSummary,
    goods: list[pa.Table],
    bads: list[pd.DataFrame],
    store: Store,
    progress: ProgressFn = no_progress,
    started: float | None = None,
) -> IngestSummary:
    """Deduplicate validated rows and commit them (and the quarantine) as one snapshot.

    ``goods`` are tables in the events schema, ``bads`` quarantine frames; ``summary.read`` must
    already count every row read, so the summary reconciles.
    """
    started = time.monotonic() if started is None else started
    source = summary.source
    bad = pd.concat(bads, ignore_index=True) if bads else pd.DataFrame(columns=["position", "reason", "user_id", "raw"])
    forgotten = store.forgotten_users()
    if len(forgotten):  # a tombstoned user's late events are dropped, good or bad alike
        before = sum(g.num_rows for g in goods)
        goods = [g.filter(pc.invert(pc.is_in(g.column("user_id"), value_set=forgotten))) for g in goods]
        gone = bad["user_id"].isin(forgotten.to_pylist())
        summary.forgotten = before - sum(g.num_rows for g in goods) + int(gone.sum())
        bad = bad[~gone]
    summary.quarantined = len(bad)
    summary.reasons = dict(Counter(r for cell in bad["reason"] for r in str(cell).split(";")))
    quarantine = _quarantine_rows(bad, "event", source, summary.ingest_id)

    progress("deduplicate", 0, None)
    events_table = store.events()
    summary.previous_snapshot_id = store.current_snapshot_id()
    good = pa.concat_tables(goods) if goods else pa.table({})
    if good.num_rows:
        good = good.set_column(
            good.schema.get_field_index("source"), "source", pa.array([source] * good.num_rows, pa.large_string())
        )
        good = good.set_column(
            good.schema.get_field_index("ingest_id"),
            "ingest_id",
            pa.array([summary.ingest_id] * good.num_rows, pa.large_string()),
        )
        new = _new_only(good, "event_id", store.column(events_table, "event_id"))
    else:
        new = good
    summary.stored = new.num_rows
    summary.duplicates = good.num_rows - new.num_rows
    new_quarantine = _new_only(quarantine, "quarantine_id", store.column(store.quarantine(), "quarantine_id"))
    summary.quarantine_new = new_quarantine.num_rows

    progress("commit", 0, summary.stored)
    props = {
        "ingest_id": summary.ingest_id,
        "source": source,
        "read": str(summary.read),
        "stored": str(summary.stored),
        "duplicates": str(summary.duplicates),
        "quarantined": str(summary.quarantined),
    }
    summary.snapshot_id = store.commit_ingest(new, new_quarantine, props)
    progress("commit", summary.stored, summary.stored)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _store_catalog(
    items: pa.Table, bad_items: pd.DataFrame, catalog: Path, ingest_id: str, store: Store
) -> tuple[int, int]:
    """Quarantine a catalog's bad rows and upsert its items; returns (items, quarantined)."""
    quarantine = _quarantine_rows(bad_items, "catalog", str(catalog), ingest_id)
    new = _new_only(quarantine, "quarantine_id", store.column(store.quarantine(), "quarantine_id"))
    if new.num_rows:
        store.quarantine().append(new)
    return store.upsert_items(items), len(bad_items)


def ingest_catalog(catalog: Path, settings: Settings, *, store: Store | None = None) -> tuple[int, int]:
    """Ingest an item catalog CSV alone; returns (items upserted, rows quarantined)."""
    items, bad_items = read_catalog_csv(catalog, settings.max_field_length)
    return _store_catalog(items, bad_items, catalog, uuid.uuid4().hex, store or Store(settings))


def ingest_file(
    path: Path,
    settings: Settings,
    fmt: str = "auto",
    *,
    catalog: Path | None = None,
    store: Store | None = None,
    progress: ProgressFn = no_progress,
) -> IngestSummary:
    """Ingest one file (and optionally an item catalog CSV) as one snapshot."""
    store = store or Store(settings)
    # read the catalog first: an unreadable catalog must fail before any event is written
    items, bad_items = read_catalog_csv(catalog, settings.max_field_length) if catalog else (None, None)
    summary = ingest_batches(read_events(path, fmt), str(path), settings, store=store, progress=progress)
    if items is not None and bad_items is not None and catalog is not None:
        summary.catalog_items, summary.catalog_quarantined = _store_catalog(
            items, bad_items, catalog, summary.ingest_id, store
        )
    return summary
