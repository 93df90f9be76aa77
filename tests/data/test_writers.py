"""Writers of one table at the same time: two ingests, an ingest and a forget, a purge meanwhile.

Each test interleaves the steps of real ingests by hand (stage, then commit in a chosen order)
against a real Iceberg catalog, so the race it names happens every time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender.config import Settings
from recommender.data.events import validate_events
from recommender.data.ingest import Ingest, IngestSummary, ingest_batches, ingest_file
from recommender.data.privacy import pseudonymize
from recommender.data.readers import read_events
from recommender.data.store import Store, expire_and_purge
from tests.conftest import write

HEADER = "event_id,user_id,item_id,event_type,timestamp\n"


def rows(n: int, user: str = "u", start: int = 0) -> str:
    return HEADER + "".join(
        f"e{k},{user}{k % 7},i{k % 13},view,2024-01-{1 + k % 28:02d}T10:00:00Z\n" for k in range(start, start + n)
    )


def staged(settings: Settings, path: Path, store: Store) -> Ingest:
    """An ingest of ``path`` with every row staged, not yet committed."""
    ingest = Ingest(IngestSummary(ingest_id=f"test-{path.stem}", source=str(path)), settings, store)
    for batch in read_events(path):
        checked = validate_events(batch.frame, settings)
        ingest.summary.read += batch.count
        ingest.add(checked.good, checked.bad)
    return ingest


def stored_ids(store: Store) -> list[str]:
    return sorted(store.read_events().column("event_id").to_pylist())


def test_two_ingests_of_overlapping_files_at_once_store_each_event_once(settings: Settings, tmp_path: Path) -> None:
    store = Store(settings)
    first = staged(settings, write(tmp_path / "a.csv", rows(40)), store)
    second = staged(settings, write(tmp_path / "b.csv", rows(40, start=20)), store)  # e20..e39 in both
    one = first.commit()
    two = second.commit()  # it read the table before the first committed: its commit must see that
    assert (one.stored, two.stored, two.duplicates) == (40, 20, 20)
    assert one.reconciles and two.reconciles and two.commit_attempts == 2  # conflict detected, checked again
    assert stored_ids(store) == sorted(f"e{k}" for k in range(60))


def test_a_commit_checks_every_append_since_it_looked_whatever_their_months(settings: Settings, tmp_path: Path) -> None:
    """Dedupe reads only the months a batch touches; what other writers appended meanwhile (two commits here,
    over several months) is checked before the commit instead."""
    store = Store(settings)
    ingest_file(write(tmp_path / "old.csv", rows(10, start=500)), settings)

    def spread(n: int, start: int) -> str:
        return HEADER + "".join(
            f"e{k},u{k % 7},i1,view,2024-{1 + k % 5:02d}-03T10:00:00Z\n" for k in range(start, start + n)
        )

    late = staged(settings, write(tmp_path / "late.csv", spread(40, 120)), store)  # e120..e159
    ingest_file(write(tmp_path / "a.csv", spread(40, 100)), settings)  # e100..e139: 20 shared
    ingest_file(write(tmp_path / "b.csv", spread(10, 150)), settings)  # e150..e159: 10 shared
    summary = late.commit()
    assert (summary.stored, summary.duplicates, summary.reconciles) == (10, 30, True)
    assert stored_ids(store) == sorted({f"e{k}" for k in range(100, 160)} | {f"e{k}" for k in range(500, 510)})


def test_a_forget_that_expires_the_history_meanwhile_still_leaves_no_duplicate(
    settings: Settings, tmp_path: Path
) -> None:
    """The appends since the ingest looked cannot be told once a forget expired every older snapshot: the
    commit then checks against every stored key."""
    store = Store(settings)
    ingest_file(write(tmp_path / "old.csv", rows(10, start=500)), settings)
    late = staged(settings, write(tmp_path / "late.csv", rows(40, start=120)), store)  # e120..e159
    ingest_file(write(tmp_path / "a.csv", rows(40, start=100)), settings)  # e100..e139: 20 shared
    store.add_tombstone(gone := pseudonymize("u0", "test-secret"))  # what a forget runs, meanwhile
    store.delete_user(gone)
    expire_and_purge(store.events(), store.orphan_min_age)
    assert len(store.events().snapshots()) == 1  # the appends since the ingest looked are gone from the history
    summary = late.commit()
    # u0 holds e126, e133 (shared) and e140, e147, e154: 5 forgotten; the 18 other shared rows are duplicates
    assert (summary.stored, summary.duplicates, summary.forgotten, summary.reconciles) == (17, 18, 5, True)
    ids = stored_ids(store)
    assert len(ids) == len(set(ids)) == 9 + 35 + 17  # old, a and late, each without its rows of u0


def test_the_newest_append_checked_is_the_one_when_the_ingest_looked(settings: Settings, tmp_path: Path) -> None:
    """A resend of the newest ingest's event with its time corrected into another month is a duplicate, also
    when another writer commits between the moment the ingest looks and its first batch."""
    store = Store(settings)
    ingest_file(write(tmp_path / "old.csv", HEADER + "e0,u0,i1,view,2024-01-05T10:00:00Z\n"), settings)
    ingest_file(write(tmp_path / "newest.csv", HEADER + "n1,u1,i1,view,2024-01-20T10:00:00Z\n"), settings)
    late = Ingest(IngestSummary(ingest_id="test-late", source="late"), settings, store)
    ingest_file(write(tmp_path / "other.csv", HEADER + "o1,u2,i2,view,2024-03-01T10:00:00Z\n"), settings)
    for batch in read_events(write(tmp_path / "late.csv", HEADER + "n1,u1,i1,view,2024-02-20T10:00:00Z\n")):
        checked = validate_events(batch.frame, settings)
        late.summary.read += batch.count
        late.add(checked.good, checked.bad)
    summary = late.commit()
    assert (summary.stored, summary.duplicates) == (0, 1)  # February holds nothing; the newest append then did
    assert stored_ids(store) == ["e0", "n1", "o1"]


def test_a_purge_during_an_ingest_keeps_its_files_and_removes_only_old_orphans(
    settings: Settings, tmp_path: Path
) -> None:
    store = Store(settings)
    ingest_file(write(tmp_path / "first.csv", rows(5, start=100)), settings)
    data = settings.home_abs / "warehouse" / "recsys" / "events" / "data"
    stale = data / "month=2020-01" / "crashed-ingest-00000.parquet"  # a killed ingest's file, two days old
    stale.parent.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["x"]}), stale)
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))

    ingest = staged(settings, write(tmp_path / "a.csv", rows(30)), store)
    done = expire_and_purge(store.events(), store.orphan_min_age)  # what a forget runs, meanwhile

    assert done.orphans_purged == 1 and not stale.exists()
    assert {Path(p).name for p in done.young_orphans} == {Path(u).name for u in ingest.events.staged.files}
    summary = ingest.commit()
    assert summary.stored == 30 and len(stored_ids(store)) == 35


def test_a_user_forgotten_during_an_ingest_is_not_stored(settings: Settings, tmp_path: Path) -> None:
    store = Store(settings)
    ingest = staged(settings, write(tmp_path / "a.csv", rows(70)), store)
    gone = pseudonymize("u3", "test-secret")
    store.add_tombstone(gone)  # the forget_user DAG, while the ingest is staging
    summary = ingest.commit()
    assert summary.forgotten == 10 and summary.stored == 60 and summary.reconciles
    users = set(store.read_events().column("user_id").to_pylist())
    assert gone not in users and len(users) == 6


def test_a_user_forgotten_between_the_last_check_and_the_commit_is_deleted_after_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(settings)
    ingest = staged(settings, write(tmp_path / "a.csv", rows(70)), store)
    gone = pseudonymize("u5", "test-secret")
    real_commit = ingest.events.staged.commit

    def commit_after_a_forget(properties: dict[str, str]) -> object:
        store.add_tombstone(gone)  # after the tombstone check, before the snapshot lands
        return real_commit(properties)

    monkeypatch.setattr(ingest.events.staged, "commit", commit_after_a_forget)
    summary = ingest.commit()
    assert summary.forgotten == 10 and summary.stored == 60 and summary.reconciles
    table = store.events()
    assert len(table.snapshots()) == 1  # the snapshot that held them was expired
    assert gone not in set(store.read_events().column("user_id").to_pylist())
    assert len(stored_ids(store)) == 60


def test_a_failed_ingest_deletes_what_it_staged(settings: Settings, tmp_path: Path) -> None:
    store = Store(settings)
    data = settings.home_abs / "warehouse" / "recsys" / "events" / "data"

    def batches():  # type: ignore[no-untyped-def]
        yield from read_events(write(tmp_path / "a.csv", rows(30)))
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="disk went away"):
        ingest_batches(batches(), "a.csv", settings, store=store)
    assert not list(data.rglob("*.parquet")) and store.current_snapshot_id() is None


def test_a_forget_that_expires_the_snapshot_an_ingest_builds_on_does_not_fail_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(settings)
    ingest_file(write(tmp_path / "first.csv", rows(20, start=500)), settings)
    ingest = staged(settings, write(tmp_path / "a.csv", rows(30)), store)
    real_commit = ingest.events.staged.commit
    calls = {"n": 0}

    def commit_after_a_forget(properties: dict[str, str]) -> object:
        calls["n"] += 1
        if calls["n"] == 1:  # between the check and the commit: a forget deletes, expires, deletes files
            store.add_tombstone(pseudonymize("u2", "test-secret"))
            store.delete_user(pseudonymize("u2", "test-secret"))
        return real_commit(properties)

    monkeypatch.setattr(ingest.events.staged, "commit", commit_after_a_forget)
    summary = ingest.commit()
    assert calls["n"] >= 2 and summary.reconciles  # the first attempt met the expired snapshot, the next one landed
    users = store.read_events(columns=("user_id",)).column("user_id").to_pylist()
    assert pseudonymize("u2", "test-secret") not in users
    theirs = sum(1 for k in (*range(500, 520), *range(30)) if k % 7 == 2)  # rows() gives row k to user u{k % 7}
    assert len(users) == 20 + 30 - theirs
