"""The landing folder: each file ingested once, then moved aside; unreadable files reported, not lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.config import Settings
from recommender.data import landing
from recommender.data.landing import ingest_landing, is_catalog, pending_files
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.ops.pipeline import train_config
from tests.conftest import SMALL_SHOP_ARGS, write


def test_files_are_ingested_once_catalog_first_and_moved(settings: Settings) -> None:
    settings.landing.mkdir(parents=True)
    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), settings.landing)
    write(settings.landing / "half-copied.csv.part", "user_id,item_id\n")
    write(settings.landing / ".hidden.csv", "user_id,item_id\n")
    assert is_catalog(catalog) and not is_catalog(events)

    summary = ingest_landing(settings)

    assert [f.kind for f in summary.files] == ["catalog", "events"]
    assert summary.stored == Store(settings).read_events().num_rows > 0
    assert summary.files[0].items == SMALL_SHOP_ARGS["items"]
    assert {p.name for p in pending_files(settings.landing)} == set()  # in-flight and hidden files left alone
    assert (settings.landing / "half-copied.csv.part").exists()
    assert ingest_landing(settings).files == []  # nothing waits any more


def test_a_crash_before_the_move_reingests_without_duplicates(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.landing.mkdir(parents=True)
    write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), settings.landing)
    (settings.landing / "catalog.csv").unlink()
    real_move = landing._move

    def crash(*args: object) -> None:
        raise OSError("disk full while moving")

    monkeypatch.setattr(landing, "_move", crash)
    with pytest.raises(OSError):
        ingest_landing(settings)  # committed, not moved
    stored = Store(settings).read_events().num_rows
    monkeypatch.setattr(landing, "_move", real_move)
    again = ingest_landing(settings)
    assert again.stored == 0 and again.files[0].duplicates == stored
    assert Store(settings).read_events().num_rows == stored


def test_an_unreadable_file_goes_to_failed_with_its_reason(settings: Settings) -> None:
    settings.landing.mkdir(parents=True)
    write(settings.landing / "notes.txt", "hello\n")
    summary = ingest_landing(settings)
    assert len(summary.failed) == 1 and "format" in str(summary.failed[0].error)
    notes = list((settings.landing / "failed").glob("*.error"))
    assert len(notes) == 1 and "format" in notes[0].read_text()


def test_symlinks_out_of_the_landing_folder_are_never_followed(settings: Settings, tmp_path: Path) -> None:
    settings.landing.mkdir(parents=True)
    secret = write(
        tmp_path / "elsewhere.csv", "user_id,item_id,event_type,timestamp\nu9,i9,view,2025-01-01T00:00:00Z\n"
    )
    (settings.landing / "escape.csv").symlink_to(secret)
    (settings.landing / "dir-link").symlink_to(tmp_path)
    inside = write(settings.landing / "_staged.csv", secret.read_text())  # hidden: only reachable through a link
    (settings.landing / "inside.csv").symlink_to(inside)

    summary = ingest_landing(settings)

    outcome = {Path(f.file).name: f for f in summary.files}
    assert outcome["escape.csv"].error == "escape.csv links outside the landing folder"
    assert outcome["dir-link"].error and outcome["inside.csv"].stored == 1
    assert Store(settings).read_events().num_rows == 1  # the file behind the escaping link was not read
    assert secret.read_text().startswith("user_id") and (tmp_path / "elsewhere.csv").is_file()  # nor moved
    assert sorted(p.name for p in (settings.landing / "failed").iterdir() if not p.name.endswith(".error")) == sorted(
        p.name for p in (settings.landing / "failed").iterdir() if p.is_symlink()
    )


def test_train_config_from_a_trigger_form_keeps_only_the_family_parameters(settings: Settings) -> None:
    conf = {"model": "itemknn", "K": 30, "factors": 99, "half_life_days": 7, "bm25": True, "k": 20, "seed": None}
    config = train_config(settings, conf, snapshot_id=5)
    assert config.family == "itemknn" and config.params == {"K": 30}  # factors is not an item-KNN knob
    assert config.weighting is not None and config.weighting.half_life_days == 7 and config.weighting.bm25
    assert config.weighting.event_weights == settings.event_weights
    assert (config.k, config.seed, config.snapshot_id) == (20, settings.seed, 5)
    with pytest.raises(ValueError, match="unknown model"):
        train_config(settings, {"model": "svd"})
    form = {"model": "sequential", "hidden": 32, "blocks": 1, "dropout": 0.5, "learning_rate": 0.001, "K": 5}
    sequential = train_config(settings, form)
    assert sequential.params == {"hidden": 32, "blocks": 1, "dropout": 0.5, "learning_rate": 0.001}


def test_many_files_are_one_snapshot_a_row_two_hold_is_stored_once_and_a_retried_commit_commits_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the ingest DAG's mapped tasks do: each file staged on its own, then one commit of them all."""
    from recommender.data.landing import commit_landed, plan_landing, stage_landed

    settings.landing.mkdir(parents=True)
    header = "event_id,user_id,item_id,event_type,timestamp\n"
    rows = [f"e{k},u{k % 5},i{k % 7},view,2024-0{1 + k % 3}-02T10:00:00Z\n" for k in range(30)]
    write(settings.landing / "a.csv", header + "".join(rows[:20]))
    write(settings.landing / "b.csv", header + "".join(rows[10:]))  # e10..e19 in both
    plan = plan_landing(settings)
    staged = [stage_landed(settings, path) for path in plan.files]
    assert Store(settings).current_snapshot_id() is None  # staged: nothing visible yet
    real_move = landing._move

    def crash(*args: object) -> None:
        raise OSError("the worker died after the commit")

    monkeypatch.setattr(landing, "_move", crash)
    with pytest.raises(OSError):
        commit_landed(settings, plan, staged)
    events = Store(settings).events()
    assert len(events.snapshots()) == 1 and Store(settings).read_events().num_rows == 30
    monkeypatch.setattr(landing, "_move", real_move)
    again = commit_landed(settings, plan, staged)  # Airflow retries the commit task with the same plan
    assert len(Store(settings).events().snapshots()) == 1 and Store(settings).read_events().num_rows == 30
    assert [(Path(f.file).name, f.stored, f.duplicates) for f in again.files] == [("a.csv", 20, 0), ("b.csv", 10, 10)]
    assert again.stored == 30 and pending_files(settings.landing) == []


@pytest.mark.parametrize("dies", ["between_the_two_commits", "after_both_then_a_forget_expires_the_history"])
def test_a_retried_landing_commit_never_deletes_what_a_commit_before_it_stored(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, dies: str
) -> None:
    """The task dies after the quarantine's commit (or after both, and a forget then expires the snapshot that
    names the ingest); Airflow retries it with the same staged parts: every row stays readable, stored once."""
    from recommender.data import store as store_module
    from recommender.data.landing import commit_landed, plan_landing, stage_landed
    from recommender.data.store import StagedFileGoneError, expire_and_purge

    settings.landing.mkdir(parents=True)
    header = "event_id,user_id,item_id,event_type,timestamp\n"
    write(settings.landing / "a.csv", header + "e1,u1,i1,view,2024-01-02T10:00:00Z\ne2,u2,i1,click,nope\n")
    write(settings.landing / "b.csv", header + "e3,u3,i2,view,2024-02-02T10:00:00Z\n")
    plan = plan_landing(settings)
    staged = [stage_landed(settings, path) for path in plan.files]
    real = store_module.StagedFiles.commit

    def die_at_the_events(self: store_module.StagedFiles, properties: dict[str, str]) -> object:
        if self.table.name()[-1] == "events":
            raise SystemExit("killed")
        return real(self, properties)

    def die_after(*args: object) -> None:
        raise SystemExit("killed after the commits")

    if dies == "between_the_two_commits":
        monkeypatch.setattr(store_module.StagedFiles, "commit", die_at_the_events)
    else:
        monkeypatch.setattr(landing, "_move", die_after)
    with pytest.raises(SystemExit):
        commit_landed(settings, plan, staged)
    monkeypatch.undo()
    store = Store(settings)
    if dies == "between_the_two_commits":
        commit_landed(settings, plan, staged)
        assert sorted(store.read_events().column("event_id").to_pylist()) == ["e1", "e3"]
    else:
        store.add_tombstone(gone := pseudonymize("u3", "test-secret"))  # the forget_user DAG meanwhile
        store.delete_user(gone)
        expire_and_purge(store.events(), store.orphan_min_age)
        assert store.snapshot_of(plan.ingest_id) is None  # the retry cannot find its snapshot any more
        with pytest.raises(StagedFileGoneError, match="next ingest run stages the files again"):
            commit_landed(settings, plan, staged)  # e3's file went with the forget: nothing committed now
        again = ingest_landing(settings)  # the next run: the files are still in the landing folder
        assert again.stored == 0 and sorted(store.read_events().column("event_id").to_pylist()) == ["e1"]
    assert store.quarantine().scan().to_arrow().num_rows == 1  # readable: none of its files was deleted
