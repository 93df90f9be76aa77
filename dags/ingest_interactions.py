"""Ingest: drain the API's event stream, then the landing folder; announce new interactions."""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException
from recsys_common import INTERACTIONS, SERVICE_RETRIES, WRITERS, settings

DOC = """
### Ingest interactions
Hourly, or on demand (**Trigger**):

0. **mark_snapshot**: notes the `events` table's current snapshot.
1. **drain_event_stream**: events the shop posted to `POST /v1/events` (already validated and
   pseudonymized by the API) are read from the Redis stream as a consumer group, stored in the
   Iceberg `events` table in one commit, and only then acknowledged. A retried or crashed run
   stores nothing twice and loses nothing.
2. **plan_landing_files**: the item catalogs (CSV) dropped in the landing folder (`RECSYS_LANDING_DIR`,
   default `$RECSYS_HOME/landing`) are upserted and moved to `processed/`; the event files (CSV,
   Parquet, Amazon or session-rec format) are listed.
3. **stage_landing_file**, one mapped task per event file (on Celery or Kubernetes workers they spread
   over the machines; the warehouse must then be shared storage): validated, deduplicated against the
   table and written as data files, not committed. Unreadable files go to `failed/` with a `.error`
   note. Bad rows are quarantined with their reason.
4. **commit_landing_files**: every staged file in ONE snapshot (nothing of the pass is visible before
   it; a row two files hold is stored once), then the files move to `processed/`. A retry finds its
   snapshot and commits nothing twice.
5. **announce_interactions**: when this run stored anything new (counted from the table's
   snapshots, so a retried attempt's commit counts too), updates the `interactions` Asset,
   which starts `retrain_recommender`. Skipped when nothing was new.
"""


@dag(
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "ingest"],
    doc_md=DOC,
    default_args=SERVICE_RETRIES,
)
def ingest_interactions() -> None:
    """Stream and landing files -> Iceberg; updates the ``interactions`` Asset."""

    @task
    def mark_snapshot() -> int | None:
        """The events table's snapshot before this run (so retried attempts still count)."""
        from recommender.ops.pipeline import snapshot_mark

        return snapshot_mark(settings())

    @task(**WRITERS)
    def drain_event_stream() -> dict[str, Any]:
        """Store the API's event stream, acknowledging after the commit."""
        from recommender.ops.pipeline import drain_events

        return drain_events(settings())

    @task(**WRITERS)
    def plan_landing_files() -> list[str]:
        """Upsert the waiting catalogs; list the waiting event files (the whole plan: XCom ``plan``)."""
        from airflow.sdk import get_current_context

        from recommender.ops.pipeline import plan_landed_files

        plan = plan_landed_files(settings())
        get_current_context()["ti"].xcom_push("plan", plan)
        return list(plan["files"])  # type: ignore[call-overload]

    @task(map_index_template="{{ file_label }}")
    def stage_landing_file(path: str) -> dict[str, Any]:
        """Validate, deduplicate and stage one event file, uncommitted."""
        from pathlib import Path

        from airflow.sdk import get_current_context

        from recommender.ops.pipeline import stage_landed_file

        get_current_context()["file_label"] = Path(path).name  # type: ignore[typeddict-unknown-key]
        return stage_landed_file(settings(), path)

    @task(**WRITERS, trigger_rule="none_failed")
    def commit_landing_files(staged: list[dict[str, Any]] | None) -> dict[str, Any]:
        """Every staged file in one snapshot; then move the files aside."""
        from airflow.sdk import get_current_context

        from recommender.ops.pipeline import commit_landed_files

        plan = get_current_context()["ti"].xcom_pull(task_ids="plan_landing_files", key="plan")
        return commit_landed_files(settings(), plan, list(staged or []))

    @task(outlets=[INTERACTIONS])
    def announce_interactions(mark: int | None, outlet_events: Any = None) -> int:
        """Update the ``interactions`` Asset when this run stored events (skip otherwise)."""
        from recommender.ops.pipeline import stored_since

        stored = stored_since(settings(), mark)
        if stored == 0:
            raise AirflowSkipException("nothing new was stored: no retrain needed")
        outlet_events[INTERACTIONS].extra = {"stored": stored}
        return stored

    mark = mark_snapshot()
    drained, plan = drain_event_stream(), plan_landing_files()
    mark >> drained >> plan  # one Iceberg writer at a time (the staging commits nothing)
    landed = commit_landing_files(stage_landing_file.expand(path=plan))
    landed >> announce_interactions.override(trigger_rule="none_failed")(mark)


ingest_interactions()
