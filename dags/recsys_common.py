"""What the DAGs share: the ``interactions`` Asset, retry policy, and settings for a task.

Not a DAG file (listed in ``.airflowignore``); imports stay light so parsing a DAG is cheap.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param, task

from recommender.config import WRITER_POOL

if TYPE_CHECKING:
    from recommender.config import Settings

INTERACTIONS = Asset(name="interactions", uri="recsys://interactions")
"""Updated whenever an ingest stored new events; the retrain is scheduled on it."""

WRITERS: dict[str, Any] = {"pool": WRITER_POOL}
"""For tasks that commit to the Iceberg tables: the stack's one-slot pool runs them one at a time, across DAGs
(a commit that still meets a concurrent writer, from the CLI say, fails and is checked and retried)."""

SERVICE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}
"""For tasks that talk to Redis, MLflow or the API: they ride out a restart of any of them."""


def settings() -> Settings:
    """The system's settings, read from the environment the task runs in."""
    from recommender.config import Settings

    return Settings()


def optional(kind: str, title: str, description: str, **schema: Any) -> Param:
    """A form field that may stay empty (null: the default the description names)."""
    return Param(None, type=["null", kind], title=title, description=description, **schema)


def refresh_audiences_task() -> Any:
    """The task that computes the audiences ``GET /v1/audiences`` keeps for the served version (after a publish,
    given what the publish's last task returned, or on its own schedule)."""

    @task(task_id="audiences")
    def audiences(checked: dict[str, Any] | None = None) -> dict[str, Any]:
        """The audiences GET /v1/audiences keeps, computed for the version just published."""
        from recommender.ops.pipeline import refresh_served_audiences

        return refresh_served_audiences(settings())

    return audiences
