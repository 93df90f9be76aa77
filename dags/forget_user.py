"""The right to be forgotten: complete deletions requested through the API (or given here)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, task
from recsys_common import SERVICE_RETRIES, WRITERS, optional, settings

DOC = """
### Forget users
Hourly, and on demand (**Trigger**, optionally with a raw `user_id`).

`DELETE /v1/users/{user_id}` (admin key) removes a user's precomputed lists and pending events
from Redis at once and queues the rest here: a tombstone (later ingests drop the user's events,
training skips them), deletion of their rows from the Iceberg `events`, `quarantine`, `recommendations` and
`audiences` tables,
expiry of every older snapshot and a purge of the data files no snapshot references any more,
so no time travel brings them back. The task's return value says what was removed where, and which
registered model versions still hold them (no publish serves them again). `purge_models` then
deletes the versions older than `RECSYS_FORGET_MODEL_RETENTION_DAYS` (30) that hold a forgotten user,
with their runs and files; production and the rollback target stay.
"""


@dag(
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "privacy"],
    doc_md=DOC,
    params={"user_id": optional("string", "User id", "A raw user id to forget now. Empty: only the API's queue.")},
    default_args=SERVICE_RETRIES,
)
def forget_user() -> None:
    """Tombstone, delete and purge every requested user."""

    @task(**WRITERS)
    def forget(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Forget the given user and everyone queued by the API."""
        from recommender.ops.pipeline import forget_users

        return forget_users(settings(), (params or {}).get("user_id"))

    @task(**WRITERS)
    def purge_models() -> dict[str, Any]:
        """Delete registered versions past RECSYS_FORGET_MODEL_RETENTION_DAYS that hold a forgotten user."""
        from recommender.ops.pipeline import purge_models_of_forgotten

        return purge_models_of_forgotten(settings())

    forget() >> purge_models()


forget_user()
