"""Bulk export on demand: every user's list of a placement from the served version, for email, push and the
warehouse."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task
from recsys_common import SERVICE_RETRIES, WRITERS, optional, settings

DOC = """
### Export recommendations
Manual only (the retrain DAG exports after each publish when `RECSYS_EXPORT_PLACEMENT` is set).
**Trigger** with a placement that ranks for users (`home`, `new`, `buy_again`, ...), the items per
user and whether to redo an export already done for the served model version.

Every user's list is arranged as the API serves it (the placement's rules, availability and
diversity, with each item's reason) and written to the Iceberg table `recommendations` (columns
`user_id` (the pseudonym), `item_id`, `rank`, `score`, `reason`, `version`, `placement`,
`exported_at`) in one commit, or to Parquet or CSV files under `RECSYS_EXPORT_TO` (a path or an
`s3://` URI) with `_SUCCESS` written last. A retry replaces, never doubles. Forgotten users are
never exported. The same as `recsys export`.
"""

PARAMS = {
    "placement": Param("home", type="string", title="Placement", description="A placement that ranks for users."),
    "n": optional("integer", "Items per user", "Empty: RECSYS_EXPORT_N (50).", minimum=1, maximum=1000),
    "force": Param(
        False,
        type="boolean",
        title="Export again",
        description="Redo an export already done for the served model version and placement.",
    ),
}


@dag(
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "export"],
    doc_md=DOC,
    params=PARAMS,
    default_args=SERVICE_RETRIES,
)
def export_recommendations() -> None:
    """One bulk export."""

    @task(**WRITERS)
    def export(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every user's list of the placement, to the table or the files."""
        from recommender.ops.pipeline import export_served

        p = params or {}
        return export_served(settings(), p.get("placement") or "home", p.get("n"), bool(p.get("force")))

    export()


export_recommendations()
