"""The audiences the API keeps, computed for the served model version."""

from __future__ import annotations

from airflow.sdk import dag
from airflow.timetables.trigger import CronTriggerTimetable
from recsys_common import SERVICE_RETRIES, refresh_audiences_task

DOC = """
### Refresh audiences
Every 10 minutes, after each publish (the retrain DAG's `audiences` task) and on demand.

`GET /v1/audiences?item=I` (or `category=C`, `attribute=K=V`; a key of the write role) keeps the target
and answers 202 *pending* until this job computed its audience: the users the served model version scores
highest for the target's items. Each run computes only what the served version lacks (a new target, a
larger `top`, a new version), so a run with nothing to do takes seconds and loads no model. Targets
nobody asked for in `RECSYS_AUDIENCE_KEEP_DAYS` (30) are dropped. Forgotten users are left out, and a user
forgotten while it runs is removed from what it stored. The same as `recsys audience --refresh`.
"""


@dag(
    schedule=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "audiences"],
    doc_md=DOC,
    default_args=SERVICE_RETRIES,
)
def refresh_audiences() -> None:
    """One refresh."""

    refresh_audiences_task()()


refresh_audiences()
