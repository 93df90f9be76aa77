"""Ingest against a real Iceberg SQL catalog in a temp folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from recommender.config import Settings
from recommender.data.catalog import ITEM_SCHEMA
from recommender.data.ingest import ingest_file
from recommender.data.privacy import pseudonymize
from recommender.data.readers import FormatError
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from tests.conftest import write

HEADER = "event_id,user_id,item_id,event_type,timestamp,quantity,price\n"
MIXED = HEADER + (
    "e1,alice,i1,view,2024-01-01T10:00:00Z,,\n"
    "e2,alice,i2,purchase,1704103200,2,9.99\n"
    ",bob,i1,VIEW,2024-01-02 10:00:00+01:00,,\n"
    ",,i1,view,2024-01-01T10:00:00Z,,\n"
    ",carol,i1,click,2024-01-01T10:00:00Z,,\n"
    ",carol,i1,view,notatime,,\n"
    "e3,carol,i1,purchase,2024-01-01T00:00:00Z,-1,abc\n"
    "e9,dave,i9,view,2024-01-01T10:00:00Z,,,,extra\n"
    "e1,alice,i1,view,2024-01-01T10:00:00Z,,\n"
)


def test_reconciles_and_quarantines_every_bad_row(settings: Settings, tmp_path: Path) -> None:
    summary = ingest_file(write(tmp_path / "e.csv", MIXED), settings)
    assert (summary.read, summary.stored, summary.duplicates, summary.quarantined) == (9, 3, 1, 5)
    assert summary.reconciles
    assert summary.reasons == {
        "missing_field:user_id": 1,
        "unknown_event_type": 1,
        "bad_timestamp": 1,
        "bad_number:quantity": 1,
        "bad_number:price": 1,
        "malformed_row": 1,
    }
    store = Store(settings)
    assert store.read_events().num_rows == 3
    quarantine = store.quarantine().scan().to_arrow()
    assert quarantine.num_rows == 5
    dumped = str(quarantine.to_pylist()) + str(store.read_events().to_pylist())
    for raw in ("alice", "bob", "carol", "dave"):
        assert raw not in dumped  # raw user ids are never stored
    assert pseudonymize("dave", "test-secret") in dumped  # the malformed row keeps its pseudonym


def test_same_file_twice_stores_nothing_new(settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", MIXED)
    first = ingest_file(path, settings)
    second = ingest_file(path, settings)
    assert second.stored == 0 and second.duplicates == 4 and second.quarantine_new == 0
    assert second.reconciles
    assert second.snapshot_id == first.snapshot_id  # no empty snapshot
    store = Store(settings)
    assert store.read_events().num_rows == 3
    assert store.quarantine().scan().to_arrow().num_rows == 5


def test_each_ingest_is_a_snapshot_and_old_ones_stay_readable(settings: Settings, tmp_path: Path) -> None:
    one = ingest_file(write(tmp_path / "a.csv", HEADER + "a1,u1,i1,view,2024-01-01T00:00:00Z,,\n"), settings)
    two = ingest_file(
        write(
            tmp_path / "b.csv", HEADER + "b1,u2,i2,view,2024-02-01T00:00:00Z,,\nb2,u2,i3,view,2024-02-02T00:00:00Z,,\n"
        ),
        settings,
    )
    store = Store(settings)
    assert one.snapshot_id != two.snapshot_id and two.previous_snapshot_id == one.snapshot_id
    assert store.read_events(one.snapshot_id).column("event_id").to_pylist() == ["a1"]
    assert sorted(store.read_events(two.snapshot_id).column("event_id").to_pylist()) == ["a1", "b1", "b2"]
    snaps = store.snapshots()
    assert [s.snapshot_id for s in snaps] == [one.snapshot_id, two.snapshot_id]
    assert snaps[1].properties["recsys.stored"] == "2"
    with pytest.raises(LookupError, match="no snapshot"):
        store.read_events(12345)


def test_unparsable_file_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    ingest_file(write(tmp_path / "a.csv", HEADER + "a1,u1,i1,view,2024-01-01T00:00:00Z,,\n"), settings)
    before = Store(settings).current_snapshot_id()
    with pytest.raises(FormatError):
        ingest_file(write(tmp_path / "bad.csv", "nothing,useful\n1,2\n"), settings)
    assert Store(settings).current_snapshot_id() == before
    assert Store(settings).quarantine().scan().to_arrow().num_rows == 0


def test_crash_inside_the_commit_keeps_the_old_snapshot(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ingest_file(write(tmp_path / "a.csv", HEADER + "a1,u1,i1,view,2024-01-01T00:00:00Z,,\n"), settings)
    from pyiceberg.table import Transaction

    def boom(self: Transaction) -> None:
        raise RuntimeError("power cut during commit")

    monkeypatch.setattr(Transaction, "commit_transaction", boom)
    more = write(tmp_path / "b.csv", HEADER + "b1,u2,i2,view,2024-02-01T00:00:00Z,,\n")
    with pytest.raises(RuntimeError, match="power cut"):
        ingest_file(more, settings)
    monkeypatch.undo()
    store = Store(settings)
    assert store.current_snapshot_id() == first.snapshot_id
    assert store.read_events().column("event_id").to_pylist() == ["a1"]
    retry = ingest_file(more, settings)  # the retry heals it, exactly once
    assert retry.stored == 1
    assert sorted(store.read_events().column("event_id").to_pylist()) == ["a1", "b1"]


def test_catalog_is_stored_and_bad_catalog_rows_quarantined(settings: Settings, tmp_path: Path) -> None:
    events = write(tmp_path / "e.csv", HEADER + "a1,u1,i1,view,2024-01-01T00:00:00Z,,\n")
    catalog = write(
        tmp_path / "c.csv",
        "item_id,title,category,price,in_stock\n"
        "i1,Soap,bath,3.5,true\ni2,Brush,hair,-1,yes\n,Nameless,x,1,no\n"
        "i3,Comb,hair,2,maybe\ni1,Soap v2,bath,3.9,false\n",
    )
    summary = ingest_file(events, settings, catalog=catalog)
    assert (summary.catalog_items, summary.catalog_quarantined) == (1, 3)
    items = Store(settings).read_items().to_pylist()
    assert [(r["item_id"], r["title"], r["in_stock"]) for r in items] == [("i1", "Soap v2", False)]
    reasons = Store(settings).quarantine().scan().to_arrow().column("reason").to_pylist()
    assert sorted(reasons) == ["bad_number:price", "bad_value:in_stock", "missing_field:item_id"]


def test_generated_shop_round_trips(settings: Settings, tmp_path: Path) -> None:
    shop = generate(ShopSpec(users=200, items=100, events=5_000, seed=2))
    events, catalog = write_shop(shop, tmp_path / "shop")
    summary = ingest_file(events, settings, catalog=catalog)
    assert (summary.read, summary.stored, summary.quarantined) == (5_000, 5_000, 0)
    stored = Store(settings).read_events()
    assert stored.num_rows == 5_000
    assert set(stored.column("item_id").to_pylist()) <= set(shop.catalog.column("item_id").to_pylist())
    assert pa.compute.min(stored.column("timestamp")).as_py() == pa.compute.min(shop.events.column("timestamp")).as_py()


def quarantined_text(settings: Settings) -> str:
    """What the quarantine table holds of the rows (its ``source`` column names the file, not a person)."""
    return str(Store(settings).quarantine().scan().to_arrow().drop_columns(["source"]).to_pylist())


def test_a_malformed_line_keeps_no_text_only_its_hash_length_and_field_count(
    settings: Settings, tmp_path: Path
) -> None:
    # the user id "1" also occurs inside "e1" and "i1": text substitution pseudonymized the wrong "1"
    lines = HEADER + "e1,1,i1,view,2024-01-01T10:00:00Z,,,surplus\n" + "e2,alice@example.com,i2,view\n"
    summary = ingest_file(write(tmp_path / "e.csv", lines), settings)
    assert summary.quarantined == 2 and summary.reasons == {"malformed_row": 2} and summary.reconciles
    rows = sorted(
        Store(settings).quarantine().scan().to_arrow().to_pylist(), key=lambda r: -json.loads(r["raw"])["fields"]
    )
    raws = [json.loads(r["raw"]) for r in rows]
    assert [set(r) for r in raws] == [{"line_hmac", "length", "fields", "expected_fields"}] * 2
    assert [(r["fields"], r["expected_fields"], r["length"]) for r in raws] == [(8, 7, 43), (4, 7, 28)]
    assert [r["user_id"] for r in rows] == [
        pseudonymize("1", "test-secret"),
        pseudonymize("alice@example.com", "test-secret"),
    ]
    assert not [r for r in rows if "alice" in r["raw"] + r["user_id"] or "e1," in r["raw"]]
    again = ingest_file(write(tmp_path / "e.csv", lines), settings)
    assert again.quarantine_new == 0  # the same line hashes the same: quarantined once


def test_session_ids_are_pseudonymized_in_the_quarantine_too(settings: Settings, tmp_path: Path) -> None:
    sessions = write(
        tmp_path / "clicks.txt",
        "SessionId\tItemId\tTime\nsess-secret-1\ti1\t1400000000\nsess-secret-2\ti2\tnot-a-time\nbroken-line-sess-3\n",
    )
    canonical = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp,session_id\nbob,i1,click,2024-01-01T00:00:00Z,sess-of-bob\n",
    )
    assert ingest_file(sessions, settings).quarantined == 2
    assert ingest_file(canonical, settings).quarantined == 1
    dumped = quarantined_text(settings) + str(Store(settings).read_events().to_pylist())
    for raw in ("sess-secret-1", "sess-secret-2", "broken-line-sess-3", "bob", "sess-of-bob"):
        assert raw not in dumped
    assert (
        pseudonymize("sess-of-bob", "test-secret") in dumped and pseudonymize("sess-secret-2", "test-secret") in dumped
    )


def test_catalog_attributes_and_hidden_and_a_table_made_before_them(settings: Settings, tmp_path: Path) -> None:
    from pyiceberg.catalog import load_catalog

    from recommender.data.store import TABLE_PROPERTIES, iceberg_schema

    old_schema = pa.schema([f for f in ITEM_SCHEMA if f.name not in ("hidden", "attributes")])
    settings.home_abs.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(
        settings.catalog_name, uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse
    )
    catalog.create_namespace_if_not_exists(settings.namespace)
    old = catalog.create_table(
        f"{settings.namespace}.items", schema=iceberg_schema(old_schema), properties=TABLE_PROPERTIES
    )
    old.append(pa.table({"item_id": ["i0"], "title": ["Old"], "category": ["c"], "price": [1.0], "in_stock": [True],
                         "updated_at": [datetime.now(UTC)]}, schema=old_schema))  # fmt: skip
    events = write(tmp_path / "e.csv", "user_id,item_id,event_type,timestamp\nu1,i1,view,2025-01-01T00:00:00Z\n")
    path = write(
        tmp_path / "c.csv",
        "item_id,title,category,price,in_stock,hidden,brand,rating\n"
        "i1,Soap,bath,3.5,true,false,acme,4.5\ni2,Brush,hair,2,true,yes,,\ni3,Comb,hair,2,true,maybe,zed,1\n",
    )
    summary = ingest_file(events, settings, catalog=path)
    assert (summary.catalog_items, summary.catalog_quarantined) == (3, 1)  # i0 kept; hidden=maybe quarantined
    rows = {r["item_id"]: r for r in Store(settings).read_items().to_pylist()}
    assert rows["i0"]["title"] == "Old" and rows["i0"]["hidden"] is None  # the old row, evolved
    assert rows["i1"]["hidden"] is False and json.loads(rows["i1"]["attributes"]) == {"brand": "acme", "rating": 4.5}
    assert rows["i2"]["hidden"] is True and rows["i2"]["attributes"] is None


def test_a_catalog_of_ids_and_attributes_alone_is_stored(settings: Settings, tmp_path: Path) -> None:
    """No title, category or price column (item ids and their attribute ids): it was an ArrowTypeError."""
    events = write(tmp_path / "e.csv", "user_id,item_id,event_type,timestamp\nu1,i1,view,2025-01-01T00:00:00Z\n")
    path = write(tmp_path / "c.csv", "item_id,tags\ni1,3 7 12\ni2,4\n")
    summary = ingest_file(events, settings, catalog=path)
    assert (summary.catalog_items, summary.catalog_quarantined) == (2, 0)
    rows = {r["item_id"]: r for r in Store(settings).read_items().to_pylist()}
    assert rows["i1"]["title"] is None and json.loads(rows["i1"]["attributes"]) == {"tags": "3 7 12"}


def test_dedupe_reads_only_the_months_a_batch_touches_and_counts_reused_ids(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event id names one event at one time, so a copy lands in the same month partition: a batch is checked
    against its months' files only, plus what the newest append added (a resend whose time was corrected)."""
    import recommender.data.ingest as ingest_module
    from recommender.data.store import month_filter, month_index

    months = [f"2024-{m:02d}-15T10:00:00Z" for m in range(1, 7)]
    rows = "".join(f"e{m},u{m},i1,view,{at},,\n" for m, at in enumerate(months))
    ingest_file(write(tmp_path / "history.csv", HEADER + rows), settings)
    ingest_file(write(tmp_path / "newest.csv", HEADER + "n1,u9,i2,view,2024-06-20T10:00:00Z,,\n"), settings)
    events = Store(settings).events()
    march = int(month_index(pa.array([datetime(2024, 3, 1, tzinfo=UTC)]))[0])
    planned = [task.file.file_path for task in events.scan(row_filter=month_filter("timestamp", march)).plan_files()]
    assert planned and all("month=2024-03" in path for path in planned)  # pyiceberg pruned the other months

    read: list[int] = []
    scan = ingest_module.month_batches
    monkeypatch.setattr(ingest_module, "month_batches", lambda *a: (read.append(a[-1]), scan(*a))[1])
    batch = HEADER + (
        "e2,u2,i1,view,2024-03-15T10:00:00Z,,\n"  # the same event again: a duplicate
        "e2,u2,i1,view,2024-03-16T10:00:00Z,,\n"  # ... and again at another time within this file: a duplicate
        "e3,u3,i3,purchase,2024-03-02T08:00:00Z,,\n"  # April's e3 reused in March: stored, uncounted (not read)
        "n1,u9,i2,view,2024-03-20T10:00:00Z,,\n"  # the newest ingest's event, its time corrected: a duplicate
        "f1,u1,i1,view,2024-03-21T10:00:00Z,,\n"  # new
    )
    summary = ingest_file(write(tmp_path / "march.csv", batch), settings)
    assert read == [march]  # one month read, whatever the table holds
    assert (summary.stored, summary.duplicates, summary.reused_ids, summary.reconciles) == (2, 3, 0, True)
    may = HEADER + "e4,u3,i3,purchase,2024-05-02T08:00:00Z,,\n"  # e4 is May 15's (e{m}: month m + 1)
    again = ingest_file(write(tmp_path / "may.csv", may), settings)
    assert (again.stored, again.reused_ids) == (1, 1)  # same month, another time: the id was reused
    assert ingest_file(write(tmp_path / "may2.csv", may), settings).duplicates == 1  # that copy is one now
