"""kill -9 midway through an ingest, a drain and a forget (the publish: tests/registry/test_publish.py):
the last good state is whole and readable, and a rerun completes with exact counts."""

from __future__ import annotations

from pathlib import Path

from recommender.config import Settings
from tests.faults import scenarios


def test_a_killed_ingest_leaves_the_last_snapshot_and_a_rerun_stores_every_row_once(
    settings: Settings, tmp_path: Path
) -> None:
    scenarios.killed_ingest(settings, tmp_path, rows=150_000)


def test_a_killed_drain_stores_nothing_loses_nothing_and_a_rerun_stores_each_event_once(
    redis_settings: Settings,
) -> None:
    scenarios.killed_drain(redis_settings, rows=60_000)


def test_a_killed_forget_is_completed_by_a_rerun_and_nobody_else_loses_a_row(
    redis_settings: Settings, tmp_path: Path
) -> None:
    scenarios.killed_forget(redis_settings, tmp_path, rows=60_000)
