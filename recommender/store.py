"""The versioned interaction store: Apache Iceberg tables through pyiceberg.

Three tables in one namespace: ``events`` (append-only, one snapshot per ingest),
``quarantine`` (rejected rows with reasons) and ``items`` (the catalog). The
catalog is a SQL catalog on SQLite under ``RECSYS_HOME`` by default; point
``RECSYS_CATALOG_URI`` at a REST catalog (http...) or another database and
``RECSYS_WAREHOUSE`` at object storage for a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io.pyarrow import pyarrow_to_schema
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.name_mapping import MappedField, NameMapping
from pyiceberg.transforms import MonthTransform

from recommender.catalog import ITEM_SCHEMA
from recommender.config import Settings
from recommender.events import EVENT_SCHEMA, QUARANTINE_SCHEMA

PROP_PREFIX = "recsys."
TOMBSTONE_SCHEMA = pa.schema(
    [pa.field("user_id", pa.large_string(), nullable=False), pa.field("forgotten_at", pa.timestamp("us", tz="UTC"))]
)


@dataclass(frozen=True)
class SnapshotInfo:
    """One version of the events table."""

    snapshot_id: int
    committed_at: datetime
    operation: str
    properties: dict[str, str]


def _expire_and_purge(table: Table) -> tuple[int, int]:
    """Expire every snapshot but the current one, then delete data files it does not reference."""
    table = table.refresh()
    current = table.current_snapshot()
    if current is None:
        return 0, 0
    old = [snap.snapshot_id for snap in table.snapshots() if snap.snapshot_id != current.snapshot_id]
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    fs, root = pafs.FileSystem.from_uri(table.location() + "/data")
    live = {pafs.FileSystem.from_uri(uri)[1] for uri in table.refresh().inspect.files().column("file_path").to_pylist()}
    purged = 0
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.path not in live:
            fs.delete_file(info.path)
            purged += 1
    return len(old), purged


def iceberg_schema(schema: pa.Schema) -> Schema:
    """An Iceberg schema for an Arrow schema, field ids 1..n in column order."""
    mapping = NameMapping(
        [MappedField.model_validate({"field-id": i + 1, "names": [f.name]}) for i, f in enumerate(schema)]
    )
    return pyarrow_to_schema(schema, name_mapping=mapping)


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
            return self.catalog.load_table(ident)
        except NoSuchTableError:
            return self.catalog.create_table_if_not_exists(
                ident, schema=iceberg_schema(schema), partition_spec=spec or PartitionSpec()
            )

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

    def tombstones(self) -> Table:
        """Pseudonyms of users who asked to be forgotten: never stored or trained on again."""
        return self._table("tombstones", TOMBSTONE_SCHEMA)

    # ---- reads -------------------------------------------------------------------
    def forgotten_users(self) -> pa.Array:
        """Every tombstoned pseudonym."""
        return self.column(self.tombstones(), "user_id").combine_chunks()

    def column(self, table: Table, name: str) -> pa.ChunkedArray:
        """One column of a table's current snapshot."""
        return table.scan(selected_fields=(name,)).to_arrow().column(name)

    def read_events(self, snapshot_id: int | None = None, columns: tuple[str, ...] | None = None) -> pa.Table:
        """Events at ``snapshot_id`` (the current snapshot when None), all or some ``columns``."""
        table = self.events()
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            raise LookupError(f"no snapshot {snapshot_id} in {table.name()}; see `recsys snapshots`")
        schema = pa.schema([EVENT_SCHEMA.field(c) for c in columns]) if columns else EVENT_SCHEMA
        scanned = table.scan(snapshot_id=snapshot_id, selected_fields=columns or ("*",)).to_arrow()
        return (scanned.select(list(columns)) if columns else scanned).cast(schema)

    def read_items(self) -> pa.Table:
        """The item catalog."""
        return self.items().scan().to_arrow().cast(ITEM_SCHEMA)

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

    def current_snapshot_id(self) -> int | None:
        """Id of the events table's current snapshot (None while empty)."""
        snap = self.events().current_snapshot()
        return snap.snapshot_id if snap else None

    # ---- writes ------------------------------------------------------------------
    def commit_ingest(self, events: pa.Table, quarantine: pa.Table, properties: dict[str, str]) -> int | None:
        """Store one ingest: quarantine first, then events in ONE atomic commit.

        Both are idempotent (rows are deduplicated by id before this call), so a crash
        between the two commits is healed by re-running the same ingest.
        Returns the events table's snapshot id after the ingest.
        """
        props = {PROP_PREFIX + k: v for k, v in properties.items()}
        if quarantine.num_rows:
            self.quarantine().append(quarantine.cast(QUARANTINE_SCHEMA), snapshot_properties=props)
        table = self.events()
        if events.num_rows:
            table.append(events.cast(EVENT_SCHEMA), snapshot_properties=props)
        return self.current_snapshot_id()

    def add_tombstone(self, user_id: str) -> None:
        """Record that ``user_id`` (a pseudonym) is forgotten; idempotent."""
        if user_id not in set(self.forgotten_users().to_pylist()):
            row = {"user_id": [user_id], "forgotten_at": [datetime.now(UTC)]}
            self.tombstones().append(pa.table(row, schema=TOMBSTONE_SCHEMA))

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Delete a pseudonym's rows from events and quarantine, expire every older snapshot and purge
        the data files no remaining snapshot references, so no snapshot can bring the rows back."""
        if not user_id.isalnum():
            raise ValueError("delete_user takes a pseudonym (hex), not a raw id")
        removed = {}
        for name, table in (("events", self.events()), ("quarantine", self.quarantine())):
            predicate = f"user_id == '{user_id}'"
            removed[f"{name}_rows"] = table.scan(row_filter=predicate, selected_fields=("user_id",)).to_arrow().num_rows
            if removed[f"{name}_rows"]:
                table.delete(predicate)
            removed[f"{name}_snapshots_expired"], removed[f"{name}_files_purged"] = _expire_and_purge(table)
        return removed

    def upsert_items(self, items: pa.Table) -> int:
        """Merge catalog rows by ``item_id`` (newest wins) in one overwrite commit; returns row count."""
        table = self.items()
        current = table.scan().to_arrow().cast(ITEM_SCHEMA)
        keep = current.filter(pc.invert(pc.is_in(current.column("item_id"), value_set=items.column("item_id"))))
        merged = pa.concat_tables([keep, items.cast(ITEM_SCHEMA)])
        if current.num_rows:
            table.overwrite(merged)
        else:
            table.append(merged)
        return merged.num_rows
