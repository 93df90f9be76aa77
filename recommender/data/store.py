"""The versioned interaction store: Apache Iceberg tables through pyiceberg.

Three tables in one namespace: ``events`` (append-only, one snapshot per ingest),
``quarantine`` (rejected rows with reasons) and ``items`` (the catalog). The
catalog is a SQL catalog on SQLite under ``RECSYS_HOME`` by default; point
``RECSYS_CATALOG_URI`` at a REST catalog (http...) or another database and
``RECSYS_WAREHOUSE`` at object storage for a deployment.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan
from pyiceberg.io.pyarrow import pyarrow_to_schema
from pyiceberg.manifest import ManifestContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.name_mapping import MappedField, NameMapping
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.transforms import MonthTransform

from recommender.config import Settings
from recommender.data.catalog import ITEM_SCHEMA
from recommender.data.dedupe import KeySet, digests
from recommender.data.events import EVENT_SCHEMA, QUARANTINE_SCHEMA

PROP_PREFIX = "recsys."
TOMBSTONE_SCHEMA = pa.schema(
    [pa.field("user_id", pa.large_string(), nullable=False), pa.field("forgotten_at", pa.timestamp("us", tz="UTC"))]
)
RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("reason", pa.string()),
        pa.field("version", pa.string(), nullable=False),
        pa.field("placement", pa.string(), nullable=False),
        pa.field("exported_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""A bulk export's rows (``recsys export``): ``user_id`` is the pseudonym (as in every table), ``version`` the
model version that served the list, ``reason`` the item's reason as JSON."""
AUDIENCE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("target", pa.string(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("exported_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""An exported audience (``recsys audience --export``): ``target`` is ``item:I``, ``category:C`` or
``attribute:K=V``, ``user_id`` the pseudonym."""
TABLE_PROPERTIES = {"commit.retry.num-retries": "0"}
"""pyiceberg re-applies a failed append on top of whatever a concurrent writer committed, which would
store rows that writer already stored: every commit here fails instead, and :func:`retrying`
repeats it after the caller checked its rows against the new state."""
COMMIT_ATTEMPTS = 8
SCAN_BATCH = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotInfo:
    """One version of the events table."""

    snapshot_id: int
    committed_at: datetime
    operation: str
    properties: dict[str, str]


def retrying(action: Callable[[], T], attempts: int = COMMIT_ATTEMPTS) -> T:
    """Run ``action`` again (with jittered backoff) when it lost a race with another writer of the table.

    ``action`` must refresh the table it works on. A concurrent commit makes a commit fail
    (CommitFailedException); a concurrent forget may expire the snapshot a commit was built on, or a
    read was reading, and delete its files (FileNotFoundError): both are retried on the new state.
    """
    for attempt in range(attempts):
        try:
            return action()
        except (CommitFailedException, FileNotFoundError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))  # jittered backoff
    raise AssertionError("unreachable")


def iceberg_schema(schema: pa.Schema) -> Schema:
    """An Iceberg schema for an Arrow schema, field ids 1..n in column order."""
    mapping = NameMapping(
        [MappedField.model_validate({"field-id": i + 1, "names": [f.name]}) for i, f in enumerate(schema)]
    )
    return pyarrow_to_schema(schema, name_mapping=mapping)


def _fs_path(uri: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def _references(table: Table, snapshot: Snapshot) -> set[str]:
    """Every file ``snapshot`` needs: its manifest list, manifests and live data files (filesystem paths)."""
    io = table.io
    paths = {snapshot.manifest_list}
    for manifest in snapshot.manifests(io):
        paths.add(manifest.manifest_path)
        paths.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io, discard_deleted=True))
    return {_fs_path(p)[1] for p in paths}


@dataclass(frozen=True)
class Maintenance:
    """What expiring snapshots and purging files removed from one table."""

    snapshots_expired: int
    files_deleted: int
    """Files only the expired snapshots referenced (data files, manifests, manifest lists)."""
    orphans_purged: int
    """Files no snapshot references, older than the orphan threshold."""
    young_orphans: tuple[str, ...] = ()
    """Unreferenced files kept because they are younger: perhaps an ingest's, before its commit."""


def expire_and_purge(table: Table, orphan_min_age: timedelta, now: datetime | None = None) -> Maintenance:
    """Expire every snapshot but the current one and delete what only they referenced; then purge orphans.

    Iceberg's two rules: files of expired snapshots go at once (they are committed history, not
    in-flight work), while files no snapshot references go only once they are older than
    ``orphan_min_age`` (``RECSYS_ORPHAN_MIN_AGE_HOURS``): an ingest or drain writes its data files
    before its commit, and those must survive a purge that runs meanwhile.
    """
    table = table.refresh()
    current = table.current_snapshot()
    if current is None:
        return Maintenance(0, 0, 0)
    old = [snap for snap in table.snapshots() if snap.snapshot_id != current.snapshot_id]
    referenced_by_old = set().union(*(_references(table, snap) for snap in old)) if old else set()

    def expire() -> Table:
        fresh = table.refresh()
        if old:
            fresh.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in old]).commit()
        return fresh.refresh()

    table = retrying(expire)
    live: set[str] = set()
    for snap in table.snapshots():  # the current one, and any a concurrent writer committed meanwhile
        live |= _references(table, snap)
    fs, _ = _fs_path(table.location())
    deleted = 0
    for path in sorted(referenced_by_old - live):
        try:
            fs.delete_file(path)
            deleted += 1
        except FileNotFoundError:
            pass
    horizon = (now or datetime.now(UTC)) - orphan_min_age
    purged, young = 0, []
    _, data_root = _fs_path(table.location() + "/data")
    for info in fs.get_file_info(pafs.FileSelector(data_root, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.path in live or info.mtime is None:
            continue
        modified = info.mtime if info.mtime.tzinfo else info.mtime.replace(tzinfo=UTC)
        if modified < horizon:
            fs.delete_file(info.path)
            purged += 1
        else:
            young.append(info.path)
    return Maintenance(len(old), deleted, purged, tuple(young))


def scrub(table: Table, paths: tuple[str, ...], column: str, value: str) -> int:
    """Rewrite each file in ``paths`` without its rows whose ``column`` is ``value`` (atomically: a new
    file renamed over the old one, so an ingest that commits the file meanwhile reads one or the other)."""
    fs, _ = _fs_path(table.location())
    removed = 0
    for path in paths:
        try:
            rows = pq.read_table(path, filesystem=fs)
        except (FileNotFoundError, pa.ArrowInvalid):
            continue  # committed and moved, or still being written: the ingest's own tombstone check covers it
        hit = pc.fill_null(pc.equal(rows.column(column), value), False)
        count = pc.sum(hit).as_py() or 0
        if count:
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            pq.write_table(rows.filter(pc.invert(hit)), tmp, filesystem=fs)
            fs.move(tmp, path)
            removed += count
    return removed


def month_index(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Months since 1970-01 of each time, as the ``month`` partition counts them."""
    return pc.add(pc.multiply(pc.subtract(pc.year(ts), 1970), 12), pc.subtract(pc.month(ts), 1)).to_numpy()


def month_filter(column: str, month: int) -> BooleanExpression:
    """A row filter selecting one month of ``column`` (pyiceberg prunes the other partitions' files with it)."""
    start, end = (datetime(1970 + m // 12, m % 12 + 1, 1, tzinfo=UTC).isoformat() for m in (month, month + 1))
    return And(GreaterThanOrEqual(column, start), LessThan(column, end))  # type: ignore[call-arg,arg-type]


def month_batches(table: Table, columns: tuple[str, ...], column: str, month: int) -> Iterator[pa.RecordBatch]:
    """Some columns of the rows in one month of ``column``, batch by batch: only that partition's files are read."""
    yield from table.scan(row_filter=month_filter(column, month), selected_fields=columns).to_arrow_batch_reader()


def appended_since(
    table: Table, base: int | None, newest_only: bool = False, start: int | None = None
) -> list[int] | None:
    """The appends (ingests) committed after snapshot ``base`` up to the current one (or ``start``; every one
    back to the table's first when ``base`` is None; with ``newest_only`` only the newest), newest first; None
    when ``base`` is no longer in the history (a forget expired it meanwhile: what came since cannot be told)."""
    found = []
    snap = table.current_snapshot() if start is None else table.snapshot_by_id(start)
    while snap is not None and snap.snapshot_id != base:
        if snap.summary is not None and snap.summary.operation == Operation.APPEND:
            found.append(int(snap.snapshot_id))
            if newest_only:
                return found
        if snap.parent_snapshot_id is None:
            return found if base is None else None  # the table's first snapshot: everything was walked
        snap = table.snapshot_by_id(snap.parent_snapshot_id)
    return None if snap is None else found  # a parent expired by a forget: what came since cannot be told


def added_files(table: Table, snapshot_ids: list[int]) -> list[str]:
    """The data files those snapshots added that the current snapshot still holds (a forget may have rewritten
    some since). Only manifests written since the oldest of them are read: a table's history is not."""
    current = table.current_snapshot()
    wanted = [s for i in snapshot_ids if (s := table.snapshot_by_id(i)) is not None]
    if current is None or not wanted:
        return []
    oldest, ids = min(s.sequence_number or 0 for s in wanted), {s.snapshot_id for s in wanted}
    return [
        entry.data_file.file_path
        for manifest in current.manifests(table.io)
        if manifest.content == ManifestContent.DATA and (manifest.sequence_number or 0) >= oldest
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
        if entry.snapshot_id in ids
    ]


def read_columns(uri: str, columns: list[str]) -> pa.Table:
    """Some columns of one data file."""
    fs, path = _fs_path(uri)
    return pq.read_table(path, columns=columns, filesystem=fs)


class StagedFileGoneError(RuntimeError):
    """A file staged for a commit no longer exists (a retried commit long after, or after a forget)."""


class StagedFiles:
    """Data files written for one table ahead of one commit: Iceberg's write-then-commit.

    Rows are written as Parquet files under the table's ``data/`` folder as they come (one file
    per month partition for a partitioned table), so memory stays bounded whatever the input's
    size; :meth:`commit` adds them all in ONE fast-append snapshot. Until then no reader sees
    them, and a crash leaves only unreferenced files that the orphan purge removes after its
    threshold.
    """

    def __init__(self, table: Table, schema: pa.Schema, month_column: str | None = None, file_rows: int = 500_000):
        self.table = table
        self.schema = schema
        self.month_column = month_column
        self.write_id = uuid.uuid4().hex
        self.files: list[str] = []
        self.committed = False
        """Whether :meth:`commit` added the files (from then on nothing here deletes them)."""
        self.file_rows = file_rows
        self._pending: list[pa.Table] = []
        self._fs, _ = _fs_path(table.location())

    def write(self, rows: pa.Table) -> None:
        """Stage ``rows`` (in :attr:`schema`): kept in Arrow until about ``file_rows``, then written."""
        if rows.num_rows:
            self._pending.append(rows.cast(self.schema))
        if sum(t.num_rows for t in self._pending) >= self.file_rows:
            self.flush()

    @property
    def files_or_pending(self) -> bool:
        """Whether anything was staged."""
        return bool(self.files or self._pending)

    def flush(self) -> None:
        """Write what is pending as data files (one per month partition)."""
        if not self._pending:
            return
        rows = pa.concat_tables(self._pending)
        self._pending = []
        groups: list[tuple[str, pa.Table]] = [("", rows)]
        if self.month_column is not None:
            values = month_index(rows.column(self.month_column))
            groups = [
                (f"month={1970 + int(m) // 12:04d}-{int(m) % 12 + 1:02d}/", rows.filter(pa.array(values == m)))
                for m in np.unique(values)
            ]
        for folder, part in groups:
            uri = f"{self.table.location()}/data/{folder}{self.write_id}-{len(self.files):05d}.parquet"
            fs, path = _fs_path(uri)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            pq.write_table(part, path, filesystem=fs)
            self.files.append(uri)

    def drop(self, remove: Callable[[pa.Table], np.ndarray]) -> int:
        """Rewrite the staged files without the rows ``remove`` marks; returns how many were dropped."""
        self.flush()
        kept: list[str] = []
        dropped = 0
        for uri in self.files:
            _, path = _fs_path(uri)
            try:
                rows = pq.read_table(path, filesystem=self._fs)
            except FileNotFoundError as exc:
                raise StagedFileGoneError(
                    f"a staged data file is gone ({uri}): it was committed and then rewritten by a forget, or it "
                    "outlived RECSYS_ORPHAN_MIN_AGE_HOURS; nothing was committed now, and the next ingest run "
                    "stages the files again (deduplication keeps what is stored already)"
                ) from exc
            mask = remove(rows)
            if not mask.any():
                kept.append(uri)
                continue
            dropped += int(mask.sum())  # the original stays: it may be live already (a commit that landed
            # but raised, a retried task), and an unreferenced one is the orphan purge's
            if (~mask).any():
                rest = rows.filter(pa.array(~mask))
                new_uri = uri.replace(".parquet", f"-r{uuid.uuid4().hex[:6]}.parquet")
                pq.write_table(rest, _fs_path(new_uri)[1], filesystem=self._fs)
                kept.append(new_uri)
        self.files = kept
        return dropped

    def column(self, name: str) -> Iterator[pa.ChunkedArray]:
        """One column of every staged file, file by file."""
        self.flush()
        for uri in self.files:
            yield pq.read_table(_fs_path(uri)[1], columns=[name], filesystem=self._fs).column(name)

    def commit(self, properties: dict[str, str]) -> Table:
        """Add every staged file in one snapshot; raises CommitFailedException if the table moved."""
        self.flush()
        if self.files:
            self.table.add_files(self.files, snapshot_properties=properties, check_duplicate_files=False)
            self.committed = True
        return self.table

    def discard(self) -> None:
        """Delete the staged files (an ingest that failed before its commit)."""
        self._pending = []
        if self.committed:  # a failure after the commit: the files are the table's now
            return
        for uri in self.files:
            with contextlib.suppress(FileNotFoundError):
                self._fs.delete_file(_fs_path(uri)[1])
        self.files = []


def _items(table: pa.Table) -> pa.Table:
    """Catalog rows in :data:`ITEM_SCHEMA` (a table evolved to new columns keeps them after the old ones)."""
    return table.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)


class Store:
    """Access to the Iceberg tables; the catalog connects on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def catalog(self) -> Catalog:
        """The Iceberg catalog (creates ``RECSYS_HOME`` for the default SQLite catalog)."""
        s = self.settings
        if s.catalog_uri is None:
            s.home_abs.mkdir(parents=True, exist_ok=True)
        catalog = load_catalog(s.catalog_name, uri=s.iceberg_catalog_uri, warehouse=s.iceberg_warehouse)
        catalog.create_namespace_if_not_exists(s.namespace)
        return catalog

    def _table(self, name: str, schema: pa.Schema, spec: PartitionSpec | None = None) -> Table:
        ident = f"{self.settings.namespace}.{name}"
        try:
            table = self.catalog.load_table(ident)
        except NoSuchTableError:
            return self.catalog.create_table_if_not_exists(
                ident,
                schema=iceberg_schema(schema),
                partition_spec=spec or PartitionSpec(),
                properties=TABLE_PROPERTIES,
            )
        if any(table.properties.get(k) != v for k, v in TABLE_PROPERTIES.items()):  # a table made before them
            with table.transaction() as tx:
                tx.set_properties(TABLE_PROPERTIES)
        if set(schema.names) - {f.name for f in table.schema().fields}:  # made before a column was added
            with table.update_schema() as update:
                update.union_by_name(iceberg_schema(schema))
        return table

    def events(self) -> Table:
        """The events table, partitioned by month of the event time."""
        ts_id = EVENT_SCHEMA.get_field_index("timestamp") + 1
        spec = PartitionSpec(PartitionField(source_id=ts_id, field_id=1000, transform=MonthTransform(), name="month"))
        return self._table("events", EVENT_SCHEMA, spec)

    def quarantine(self) -> Table:
        """Rejected rows with their reasons."""
        return self._table("quarantine", QUARANTINE_SCHEMA)

    def items(self) -> Table:
        """The item catalog (latest row per item)."""
        return self._table("items", ITEM_SCHEMA)

    def recommendations(self) -> Table:
        """Bulk exports of the served lists, one set of rows per model version and placement."""
        return self._table("recommendations", RECOMMENDATION_SCHEMA)

    def audiences(self) -> Table:
        """Exported audiences, one set of rows per target and model version."""
        return self._table("audiences", AUDIENCE_SCHEMA)

    def tombstones(self) -> Table:
        """Pseudonyms of users who asked to be forgotten: never stored or trained on again."""
        return self._table("tombstones", TOMBSTONE_SCHEMA)

    # ---- reads -------------------------------------------------------------------
    def tombstone_times(self) -> dict[str, float]:
        """Every tombstoned pseudonym -> when it was forgotten (unix seconds)."""
        rows = self.tombstones().scan().to_arrow()
        times = rows.column("forgotten_at").cast(pa.int64()).to_pylist()
        return {u: (t or 0) / 1e6 for u, t in zip(rows.column("user_id").to_pylist(), times, strict=True)}

    def forgotten_users(self) -> pa.Array:
        """Every tombstoned pseudonym."""
        return self.tombstones().scan(selected_fields=("user_id",)).to_arrow().column("user_id").combine_chunks()

    def keys(self, table: Table, name: str, seed: int) -> KeySet:
        """Digests of one key column of the table's current snapshot, read batch by batch (bounded memory)."""

        def scan(current: Table) -> KeySet:
            found = KeySet()
            for batch in current.scan(selected_fields=(name,)).to_arrow_batch_reader():
                found.add(digests(batch.column(name), seed))
            return found

        return retrying(lambda: scan(table.refresh()))

    def read_events(self, snapshot_id: int | None = None, columns: tuple[str, ...] | None = None) -> pa.Table:
        """Events at ``snapshot_id`` (the current snapshot when None), all or some ``columns``."""
        table = self.events()
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            raise LookupError(f"no snapshot {snapshot_id} in {table.name()}; see `recsys snapshots`")
        schema = pa.schema([EVENT_SCHEMA.field(c) for c in columns]) if columns else EVENT_SCHEMA

        def scan(current: Table) -> pa.Table:
            if snapshot_id is not None and current.snapshot_by_id(snapshot_id) is None:
                raise LookupError(f"snapshot {snapshot_id} was expired while it was read (a forget); read it again")
            scanned = current.scan(snapshot_id=snapshot_id, selected_fields=columns or ("*",)).to_arrow()
            return (scanned.select(list(columns)) if columns else scanned).cast(schema)

        return retrying(lambda: scan(table.refresh()))

    def read_items(self) -> pa.Table:
        """The item catalog."""
        return _items(self.items().scan().to_arrow())

    def snapshots(self) -> list[SnapshotInfo]:
        """Versions of the events table, oldest first."""
        out = []
        for snap in self.events().snapshots():
            summary = snap.summary
            props = dict(summary.additional_properties) if summary else {}
            out.append(
                SnapshotInfo(
                    snapshot_id=snap.snapshot_id,
                    committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC),
                    operation=str(summary.operation.value) if summary else "",
                    properties={k: v for k, v in props.items() if k.startswith(PROP_PREFIX)},
                )
            )
        return out

    def stored_since(self, snapshot_id: int | None) -> int:
        """Events committed by ingests after ``snapshot_id`` (all of them for None)."""
        snaps = self.snapshots()
        ids = [s.snapshot_id for s in snaps]
        later = snaps[ids.index(snapshot_id) + 1 :] if snapshot_id in ids else snaps
        return sum(int(s.properties.get(f"{PROP_PREFIX}stored", 0)) for s in later)

    def snapshot_of(self, ingest_id: str) -> tuple[int, dict[str, str]] | None:
        """The events snapshot an ingest committed, with its ``recsys.`` properties (None: not committed, or
        expired since)."""
        for snap in self.events().snapshots():
            props = snap.summary.additional_properties if snap.summary is not None else {}
            if props.get(PROP_PREFIX + "ingest_id") == ingest_id:
                mine = {k.removeprefix(PROP_PREFIX): v for k, v in props.items() if k.startswith(PROP_PREFIX)}
                return int(snap.snapshot_id), mine
        return None

    def current_snapshot_id(self) -> int | None:
        """Id of the events table's current snapshot (None while empty)."""
        snap = self.events().current_snapshot()
        return snap.snapshot_id if snap else None

    # ---- writes ------------------------------------------------------------------
    def staged_events(self) -> StagedFiles:
        """Files for one ingest's events (one per month partition), committed together."""
        return StagedFiles(self.events(), EVENT_SCHEMA, "timestamp", self.settings.ingest_file_rows)

    def staged_quarantine(self) -> StagedFiles:
        """Files for one ingest's quarantined rows."""
        return StagedFiles(self.quarantine(), QUARANTINE_SCHEMA, file_rows=self.settings.ingest_file_rows)

    def add_tombstone(self, user_id: str) -> None:
        """Record that ``user_id`` (a pseudonym) is forgotten; idempotent."""

        def append() -> None:
            if user_id not in set(self.forgotten_users().to_pylist()):
                row = {"user_id": [user_id], "forgotten_at": [datetime.now(UTC)]}
                self.tombstones().append(pa.table(row, schema=TOMBSTONE_SCHEMA))

        retrying(append)

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete a pseudonym's rows from events, quarantine, the exported recommendations and audiences, expire
        every older snapshot and delete the files only those referenced, so no snapshot and no file can bring the
        rows back."""
        if not user_id.isalnum():
            raise ValueError("delete_user takes a pseudonym (hex), not a raw id")
        removed = {}
        predicate = f"user_id == '{user_id}'"
        tables = (
            ("events", self.events),
            ("quarantine", self.quarantine),
            ("recommendations", self.recommendations),
            ("audiences", self.audiences),
        )
        for name, load in tables:

            def delete(load: Callable[[], Table] = load) -> int:
                table = load()
                rows = table.scan(row_filter=predicate, selected_fields=("user_id",)).to_arrow().num_rows
                if rows:
                    table.delete(predicate)
                return rows

            removed[f"{name}_rows"] = retrying(delete)
            done = expire_and_purge(load(), self.orphan_min_age)
            removed[f"{name}_snapshots_expired"] = done.snapshots_expired
            removed[f"{name}_files_deleted"] = done.files_deleted
            removed[f"{name}_orphans_purged"] = done.orphans_purged
            removed[f"{name}_unstaged_rows"] = scrub(load(), done.young_orphans, "user_id", user_id)
        return removed

    @property
    def orphan_min_age(self) -> timedelta:
        """How old an unreferenced file must be before a purge deletes it."""
        return timedelta(hours=self.settings.orphan_min_age_hours)

    def upsert_items(self, items: pa.Table | Callable[[pa.Table], pa.Table]) -> int:
        """Replace catalog rows by ``item_id`` in one overwrite commit; returns the row count.

        ``items`` are the new rows, or a function from the current rows to them (run again on
        the newer state when a concurrent commit wins).
        """

        def merge() -> int:
            table = self.items()
            current = _items(table.scan().to_arrow())
            new = (items(current) if callable(items) else items).cast(ITEM_SCHEMA)
            keep = current.filter(pc.invert(pc.is_in(current.column("item_id"), value_set=new.column("item_id"))))
            merged = pa.concat_tables([keep, new])
            if current.num_rows:
                table.overwrite(merged)
            else:
                table.append(merged)
            return merged.num_rows

        return retrying(merge)
