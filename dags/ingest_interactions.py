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
2. **ingest_landing_files**: every file dropped in the landing folder (`RECSYS_LANDING_DIR`,
   default `$RECSYS_HOME/landing`; events in CSV/Parquet/Amazon/session-rec format, or an item
   catalog CSV) is ingested once and moved to `processed/`; unreadable files go to `failed/`
   with a `.error` note. Bad rows are quarantined with their reason.
3. **announce_interactions**: when this run stored anything new (counted from the table's
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
    def ingest_landing_files() -> dict[str, Any]:
        """Ingest each waiting file once and move it aside."""
        from recommender.ops.pipeline import ingest_landed_files

        return ingest_landed_files(settings())

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
    drained, landed = drain_event_stream(), ingest_landing_files()
    mark >> drained >> landed  # one Iceberg writer at a time
    landed >> announce_interactions(mark)


ingest_interactions()
