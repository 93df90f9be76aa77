"""Ingest: read -> validate -> pseudonymize -> deduplicate -> stage data files -> one atomic Iceberg commit.

The summary always reconciles: ``read == stored + duplicates + quarantined + forgotten``.

Memory stays bounded whatever the file's size: each validated batch is deduplicated against
compact digests of the keys already stored (:mod:`recommender.data.dedupe`) and written at once as
Parquet data files; the commit adds all of them in ONE snapshot (a fast append). Nothing is
visible before that commit, so a file that cannot be parsed, or a crash, leaves the last
snapshot as it was (the unreferenced files it wrote are purged later, see
:func:`recommender.data.store.expire_and_purge`).

Concurrent writers (the CLI while a DAG runs, two drains) are safe: a commit fails when another
writer committed first, and is retried after the staged rows were checked again against the
table's new state, so no event is stored twice. Tombstones are re-read right before each commit
and once after it, so a user forgotten during an ingest is not stored again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from recommender.config import Settings
from recommender.data.catalog import read_catalog_csv
from recommender.data.dedupe import KeySet, digests, first_occurrences, seed_of
from recommender.data.events import QUARANTINE_SCHEMA, validate_events
from recommender.data.privacy import pseudonymize
from recommender.data.readers import Malformed, RawBatch, read_events
from recommender.data.store import (
    StagedFiles,
    Store,
    added_files,
    appended_since,
    month_batches,
    month_index,
    read_columns,
    retrying,
)
from recommender.progress import ProgressFn, no_progress


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
    reused_ids: int = 0
    """Rows stored whose ``event_id`` the same month already held at another time: a shop reusing an id for
    another event (an id names one event at one time; counted within the months the batch touches)."""
    quarantine_new: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    snapshot_id: int | None = None
    previous_snapshot_id: int | None = None
    catalog_items: int | None = None
    catalog_quarantined: int | None = None
    data_files: int = 0
    commit_attempts: int = 0
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
    """Rows the parser could not split into fields: their text is never kept, only what cannot identify anyone.

    The text of such a line may hold a raw id anywhere, so ``raw`` keeps a keyed hash of the line
    (the same line always gives the same hash, and nobody without the secret can test a guess),
    its length and its field count; ``user_id`` is the pseudonym of the field where the header
    puts the user, so forgetting that user also removes the row.
    """
    key = secret.encode()
    raw = [
        json.dumps(
            {
                "line_hmac": hmac.digest(key, b"line:" + m.text.encode("utf-8", "replace"), "sha256").hex()[:32],
                "length": len(m.text),
                "fields": m.fields,
                "expected_fields": m.expected,
            }
        )
        for m in rows
    ]
    return pd.DataFrame(
        {
            "position": pd.array([m.line for m in rows], dtype="Int64"),
            "reason": "malformed_row",
            "user_id": [pseudonymize(m.user, secret) if m.user else None for m in rows],
            "raw": raw,
        }
    )


def exact(d: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """Digests of (key, time): the key's high word kept, its low word mixed with the time (a splitmix64
    finalizer). The same key at another time shares the high word only: :meth:`KeySet.contains_high`."""
    z = micros.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out = d.copy()
    out[:, 1] ^= z ^ (z >> np.uint64(31))
    return out


class _Keyed:
    """One table's side of an ingest: the staged files and the digests of the keys staged and stored.

    With a ``time_column`` (the events table, partitioned by its month) a row is checked only where a copy
    of it can be: the month partitions the batch's rows fall in (read once each, on first need), the rows
    the newest append added (a resend whose time was corrected into another month) and, before each
    commit attempt, the rows appended meanwhile. The same key at the same time is a duplicate; the same key
    at another time in the same month is a reused id: stored, and counted. Without one (the quarantine) the
    whole key column is read.
    """

    def __init__(self, staged: StagedFiles, key: str, store: Store, seed: int, time_column: str | None = None):
        self.staged, self.key, self.store, self.seed, self.time_column = staged, key, store, seed, time_column
        self.base = _head(staged.table)
        self._stored: KeySet | None = None  # read on the first row to stage: an empty drain reads nothing
        self.mine = KeySet()
        self.months: set[int] = set()
        self.exact = KeySet()
        """Digests of (key, time) of the months read (:func:`exact`)."""
        self._recent: KeySet | None = None
        self.reused = 0

    @property
    def stored(self) -> KeySet:
        """Digests of the keys the table held when this ingest first looked (a table without a time column)."""
        if self._stored is None:
            self._stored = self.store.keys(self.staged.table, self.key, self.seed)
        return self._stored

    @property
    def recent(self) -> KeySet:
        """Digests of the keys the newest append (when this ingest first looked) added, whatever their month."""
        if self._recent is None:  # the newest when this ingest looked (later ones: the reconcile's); after a
            # forget expired the history, none (the months' check remains)
            newest = appended_since(self.staged.table, None, newest_only=True, start=self.base)
            self._recent = self._keys_of(newest or [])
        return self._recent

    def _keys_of(self, snapshots: list[int]) -> KeySet:
        found = KeySet()
        for uri in added_files(self.staged.table, snapshots):
            found.add(digests(read_columns(uri, [self.key]).column(self.key), self.seed))
        return found

    def _load(self, months: set[int]) -> None:
        """Read the stored keys of the months not read yet (their partitions' files only)."""
        columns = (self.key, str(self.time_column))
        for month in sorted(months - self.months):

            def scan(month: int = month) -> None:  # straight into the set: a retried scan adds members again, harmless
                for batch in month_batches(self.staged.table.refresh(), columns, str(self.time_column), month):
                    d = digests(batch.column(self.key), self.seed)
                    self.exact.add(exact(d, _micros(batch.column(str(self.time_column)))))

            retrying(scan)
            self.months.add(month)

    def add(self, rows: pa.Table) -> int:
        """Stage the rows whose key is new (first of each key only); returns how many were staged."""
        if not rows.num_rows:
            return 0
        d = digests(rows.column(self.key), self.seed)
        first = first_occurrences(d)
        if self.time_column is None:
            seen = self.stored.contains(d[first])
        elif self.base is None:
            seen = np.zeros(len(first), dtype=bool)  # an empty table: nothing to read
        else:
            times = rows.column(self.time_column).take(pa.array(first))
            self._load(set(np.unique(month_index(times)).tolist()))
            keyed = exact(d[first], _micros(times))
            seen = self.exact.contains(keyed)
            if not seen.all():  # the newest append's keys are read only when a row is not found where it falls
                seen[~seen] = self.recent.contains(d[first][~seen])
            self.reused += int((~seen & self.exact.contains_high(keyed) & ~self.mine.contains(d[first])).sum())
        new = first[~seen & ~self.mine.contains(d[first])]
        self.mine.add(d[new])
        self.staged.write(rows if len(new) == rows.num_rows else rows.take(pa.array(new)))  # all new: no copy
        return len(new)

    def reconcile(self, forgotten: pa.Array) -> tuple[int, int]:
        """Before a commit: drop staged rows another writer stored meanwhile, and rows of ``forgotten`` users.

        Returns (duplicates dropped, forgotten dropped).
        """
        table = self.staged.table = self.staged.table.refresh()
        duplicates = 0
        if self.staged.files_or_pending and _head(table) != self.base:  # someone committed since the keys were read
            since = None if self.time_column is None else appended_since(table, self.base)
            if since is None:  # no time column, or a forget expired the history meanwhile: every key
                self._stored = meanwhile = self.store.keys(table, self.key, self.seed)
            else:  # only what was appended since: the months read before are checked against it too
                meanwhile = self._keys_of(since)
            self.base = _head(table)
            duplicates = self.staged.drop(lambda rows: meanwhile.contains(digests(rows.column(self.key), self.seed)))
        gone = 0
        if len(forgotten) and self.staged.files_or_pending:
            gone = self.staged.drop(lambda rows: pc.is_in(rows.column("user_id"), value_set=forgotten).to_numpy(False))
        return duplicates, gone


def _micros(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Times as integer microseconds."""
    return pc.cast(ts, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _head(table: Table) -> int | None:
    snap = table.current_snapshot()
    return None if snap is None else int(snap.snapshot_id)


class Ingest:
    """One ingest in progress: validated batches in, one commit out (use as a context manager)."""

    def __init__(
        self,
        summary: IngestSummary,
        settings: Settings,
        store: Store,
        progress: ProgressFn = no_progress,
        forgotten: pa.Array | None = None,
    ):
        self.summary, self.settings, self.store, self.progress = summary, settings, store, progress
        self.started = time.monotonic()
        seed = seed_of(settings.hmac_secret.get_secret_value())
        self.forgotten = store.forgotten_users() if forgotten is None else forgotten
        """Users tombstoned when this ingest began: the commit drops whoever was tombstoned since."""
        self.events = _Keyed(store.staged_events(), "event_id", store, seed, "timestamp")
        self.quarantine = _Keyed(store.staged_quarantine(), "quarantine_id", store, seed)
        summary.previous_snapshot_id = self.events.base
        self.properties: dict[str, str] = {}
        """More ``recsys.`` properties for the events snapshot."""
        self.pseudonyms: dict[str, str] = {}
        """Raw id -> pseudonym, for this ingest's batches (each distinct id hashed once)."""

    def add(self, good: pa.Table, bad: pd.DataFrame) -> None:
        """Deduplicate and stage one validated batch (good rows in the events schema, bad rows to quarantine)."""
        s = self.summary
        if good.num_rows:
            good = _stamped(good, s.source, s.ingest_id)
            if len(self.forgotten):  # a tombstoned user's late events are dropped, good or bad alike
                keep = pc.invert(pc.is_in(good.column("user_id"), value_set=self.forgotten))
                s.forgotten += good.num_rows - (pc.sum(keep).as_py() or 0)
                good = good.filter(keep)
            staged = self.events.add(good)
            s.stored += staged
            s.duplicates += good.num_rows - staged
        if len(bad):
            if len(self.forgotten):
                gone = bad["user_id"].isin(self.forgotten.to_pylist()).to_numpy()
                s.forgotten += int(gone.sum())
                bad = bad[~gone]
            s.quarantined += len(bad)
            s.reasons = dict(Counter(s.reasons) + Counter(r for cell in bad["reason"] for r in str(cell).split(";")))
            s.quarantine_new += self.quarantine.add(_quarantine_rows(bad, "event", s.source, s.ingest_id))
        self.progress("stage", s.stored, None)

    def commit(self) -> IngestSummary:
        """Quarantine first, then the events in ONE snapshot; both deduplicated again if the tables moved."""
        s = self.summary
        self.progress("commit", 0, s.stored)

        checked = self.forgotten

        def commit_quarantine() -> None:
            s.commit_attempts += 1
            duplicates, gone = self.quarantine.reconcile(self._tombstoned_since(self.forgotten))
            s.quarantine_new -= duplicates + gone
            s.quarantined -= gone
            s.forgotten += gone
            self.quarantine.staged.commit(self._properties())

        def commit_events() -> None:
            nonlocal checked
            s.commit_attempts += 1
            checked = self.store.forgotten_users()
            duplicates, gone = self.events.reconcile(self._tombstoned_since(self.forgotten, checked))
            s.stored -= duplicates + gone
            s.duplicates += duplicates
            s.forgotten += gone
            self.events.staged.commit(self._properties())

        retrying(commit_quarantine)
        retrying(commit_events)
        s.reused_ids += self.events.reused
        s.data_files = len(self.events.staged.files) + len(self.quarantine.staged.files)
        late = self._tombstoned_since(checked)  # forgotten between the last check and the commit: delete them now
        if len(late) and s.stored:
            self._forget_late(late)
        s.snapshot_id = self.store.current_snapshot_id()
        self.progress("commit", s.stored, s.stored)
        s.seconds = round(time.monotonic() - self.started, 3)
        return s

    def _tombstoned_since(self, before: pa.Array, now: pa.Array | None = None) -> pa.Array:
        """Users tombstoned now (or in ``now``) who were not in ``before``."""
        now = self.store.forgotten_users() if now is None else now
        return now.filter(pc.invert(pc.is_in(now, value_set=before)))

    def _forget_late(self, late: pa.Array) -> None:
        for user in set(late.to_pylist()):
            columns = self.events.staged.column("user_id")
            rows = sum(pc.sum(pc.equal(c, user)).as_py() or 0 for c in columns)
            if rows:
                self.store.delete_user(str(user))
                self.summary.stored -= rows
                self.summary.forgotten += rows

    def _properties(self) -> dict[str, str]:
        s = self.summary
        props = {"ingest_id": s.ingest_id, "source": s.source, "read": str(s.read), "stored": str(s.stored)}
        props |= {"duplicates": str(s.duplicates), "quarantined": str(s.quarantined), "forgotten": str(s.forgotten)}
        return {f"recsys.{k}": v for k, v in {**props, **self.properties}.items()}

    def discard(self) -> None:
        """Delete everything staged (the ingest failed before its commit)."""
        self.events.staged.discard()
        self.quarantine.staged.discard()


@contextmanager
def ingest(
    source: str, settings: Settings, store: Store | None = None, progress: ProgressFn = no_progress, read: int = 0
) -> Iterator[Ingest]:
    """An :class:`Ingest` whose staged files are deleted if anything fails before its commit."""
    current = Ingest(
        IngestSummary(ingest_id=uuid.uuid4().hex, source=source, read=read),
        settings,
        store or Store(settings),
        progress,
    )
    try:
        yield current
    except BaseException:
        current.discard()
        raise


def _stamped(good: pa.Table, source: str, ingest_id: str) -> pa.Table:
    """Rows with this ingest's ``source`` and ``ingest_id``."""
    n = good.num_rows
    for name, value in (("source", source), ("ingest_id", ingest_id)):
        good = good.set_column(good.schema.get_field_index(name), name, pa.array([value] * n, pa.large_string()))
    return good


def _feed(current: Ingest, batches: Iterable[RawBatch], settings: Settings, now: datetime | None) -> None:
    """Validate, deduplicate and stage raw batches as they are read: the next batch is read and validated in a
    second thread while this one deduplicates and writes the current one (most of both runs in Arrow, outside
    the GIL); one batch ahead at most, so memory stays bounded."""
    secret = settings.hmac_secret.get_secret_value()
    source = iter(batches)

    def read_and_validate() -> tuple[int, pa.Table, pd.DataFrame] | None:
        batch = next(source, None)
        if batch is None:
            return None
        checked = validate_events(batch.frame, settings, now, current.pseudonyms)
        bad = checked.bad
        if batch.malformed:
            bad = pd.concat([bad, _malformed_frame(batch.malformed, secret)], ignore_index=True)
        return batch.count, checked.good, bad

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-validate") as ahead:
        upcoming = ahead.submit(read_and_validate)
        while (done := upcoming.result()) is not None:
            upcoming = ahead.submit(read_and_validate)
            count, good, bad = done
            current.summary.read += count
            current.add(good, bad)
            current.progress("validate", current.summary.read, None)


def ingest_batches(
    batches: Iterable[RawBatch],
    source: str,
    settings: Settings,
    *,
    store: Store | None = None,
    progress: ProgressFn = no_progress,
    now: datetime | None = None,
) -> IngestSummary:
    """Validate, deduplicate and stage raw batches as they are read; commit them as one ingest (one snapshot)."""
    with ingest(source, settings, store, progress) as current:
        _feed(current, batches, settings, now)
        return current.commit()


@dataclass(frozen=True)
class StagedPart:
    """One file validated, deduplicated against the table and staged as data files, not committed: what one
    mapped task hands to the task that commits every part in one snapshot (:func:`commit_parts`)."""

    source: str
    started_at: float
    """Unix time its staging began: users tombstoned since are dropped at the commit."""
    bases: tuple[int | None, int | None]
    """The events and quarantine tables' snapshots it was checked against."""
    events: tuple[str, ...]
    quarantine: tuple[str, ...]
    summary: dict[str, Any]
    """Its :class:`IngestSummary` as staged."""

    def to_dict(self) -> dict[str, object]:
        """Plain fields (for an XCom)."""
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> StagedPart:
        """Inverse of :meth:`to_dict`."""
        fields = {**data, "bases": tuple(data["bases"]), "events": tuple(data["events"])}
        return cls(**{**fields, "quarantine": tuple(data["quarantine"])})


def stage_file(
    path: Path, settings: Settings, fmt: str = "auto", *, store: Store | None = None, progress: ProgressFn = no_progress
) -> StagedPart:
    """Validate, deduplicate and stage one file's rows without committing them (deleted again on failure)."""
    started = time.time()
    with ingest(str(path), settings, store, progress) as current:
        _feed(current, read_events(path, fmt), settings, None)
        for side in (current.events, current.quarantine):
            side.staged.flush()
        current.summary.reused_ids = current.events.reused
        return StagedPart(
            str(path),
            started,
            (current.events.base, current.quarantine.base),
            tuple(current.events.staged.files),
            tuple(current.quarantine.staged.files),
            current.summary.to_dict(),
        )


COUNTS = ("read", "stored", "duplicates", "quarantined", "forgotten", "quarantine_new", "reused_ids")
TOMBSTONE_MARGIN_SECONDS = 300.0
"""Clocks differ between machines: users tombstoned this long before a part began are checked again too."""


def commit_parts(
    parts: list[StagedPart], settings: Settings, ingest_id: str, *, store: Store | None = None
) -> tuple[IngestSummary, list[dict[str, int]]]:
    """Commit staged parts in ONE snapshot of each table, as one ingest; returns its summary and each part's
    counts (``stored``, ``duplicates``, ``quarantined``).

    A row staged by two parts is kept in the first; rows another writer stored since the parts looked and rows of
    users tombstoned since are dropped, as a single ingest's commit does. Idempotent: a retry after the snapshot
    landed commits nothing again (the snapshot names ``ingest_id``)."""
    store = store or Store(settings)
    summary = IngestSummary(ingest_id=ingest_id, source=", ".join(p.source for p in parts))
    counts = [{k: int(p.summary[k]) for k in ("stored", "duplicates", "quarantined")} for p in parts]
    for part in parts:
        for k in COUNTS:
            setattr(summary, k, getattr(summary, k) + int(part.summary.get(k) or 0))
        summary.reasons = dict(Counter(summary.reasons) + Counter(part.summary["reasons"]))
    done = store.snapshot_of(ingest_id)
    if done is not None:  # a retry after the commit landed: what it recorded
        summary.snapshot_id, props = done
        for k in ("stored", "duplicates", "quarantined", "forgotten"):
            setattr(summary, k, int(props[k]))
        return summary, json.loads(props["parts"])
    if not parts:
        return summary, counts
    oldest = min(p.started_at for p in parts) - TOMBSTONE_MARGIN_SECONDS
    before = pa.array([u for u, at in store.tombstone_times().items() if at < oldest], pa.large_string())
    current = Ingest(summary, settings, store, forgotten=before)
    events = _drop_repeats(current.events, "event_id", [p.events for p in parts], [p.bases[0] for p in parts])
    quarantine = _drop_repeats(
        current.quarantine, "quarantine_id", [p.quarantine for p in parts], [p.bases[1] for p in parts]
    )
    for count, dropped in zip(counts, events, strict=True):
        count["stored"] -= dropped
        count["duplicates"] += dropped
    summary.stored -= sum(events)
    summary.duplicates += sum(events)
    summary.quarantine_new -= sum(quarantine)
    current.properties["parts"] = json.dumps(counts)  # for a retry that finds the snapshot
    return current.commit(), counts


def _drop_repeats(side: _Keyed, key: str, files: list[tuple[str, ...]], bases: list[int | None]) -> list[int]:
    """Adopt the parts' staged files, without the rows an earlier part staged too; returns each part's drops."""
    side.base = _oldest(bases, side.staged.table)
    seen, kept, dropped = KeySet(), [], []

    def again(rows: pa.Table) -> np.ndarray:
        d = digests(rows.column(key), side.seed)
        found = seen.contains(d) if len(seen) else np.zeros(len(d), dtype=bool)
        seen.add(d[~found])
        return found

    for part in files:  # a row two parts staged: kept in the first
        side.staged.files = list(part)
        dropped.append(side.staged.drop(again))
        kept += side.staged.files
    side.staged.files = kept
    return dropped


def _oldest(bases: list[int | None], table: Table) -> int | None:
    """The earliest of the snapshots the parts looked at (None: the table was empty for one of them)."""
    if any(b is None for b in bases):
        return None
    found = [s for b in bases if (s := table.snapshot_by_id(int(b))) is not None]  # type: ignore[arg-type]
    if len(found) < len(bases):  # one was expired since: a snapshot nobody can reach, so the commit reads every key
        return -1
    return int(min(found, key=lambda s: s.sequence_number or 0).snapshot_id)


def _store_catalog(
    items: pa.Table, bad_items: pd.DataFrame, catalog: Path, ingest_id: str, store: Store, settings: Settings
) -> tuple[int, int]:
    """Quarantine a catalog's bad rows (deduplicated and committed like an ingest's) and upsert its items;
    returns (items, quarantined)."""
    if len(bad_items):
        with ingest(str(catalog), settings, store) as current:
            current.quarantine.add(_quarantine_rows(bad_items, "catalog", str(catalog), ingest_id))
            current.commit()
    return store.upsert_items(items), len(bad_items)


def ingest_catalog(catalog: Path, settings: Settings, *, store: Store | None = None) -> tuple[int, int]:
    """Ingest an item catalog CSV alone; returns (items upserted, rows quarantined)."""
    items, bad_items = read_catalog_csv(catalog, settings.max_field_length)
    return _store_catalog(items, bad_items, catalog, uuid.uuid4().hex, store or Store(settings), settings)


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
            items, bad_items, catalog, summary.ingest_id, store, settings
        )
    return summary
