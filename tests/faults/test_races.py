"""Two writers of one table at once, as separate processes (the DAG's task and the CLI)."""

from __future__ import annotations

from pathlib import Path

from recommender.config import Settings
from tests.faults import scenarios


def test_an_ingest_and_a_forget_at_the_same_time_keep_everyone_elses_rows_and_the_user_out(
    redis_settings: Settings, tmp_path: Path
) -> None:
    scenarios.ingest_during_forget(redis_settings, tmp_path, rows=30_000)
