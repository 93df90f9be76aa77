"""Promote or roll back by hand: the human in the loop of the model registry."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from recsys_common import SERVICE_RETRIES, optional, refresh_audiences_task, settings

DOC = """
### Promote or roll back a model version
Manual only. **Trigger** with:

- `action`: `promote` moves `production` to `version` through the quality gate (tick `force`
  to override a refusal; the reason is recorded on the version); `rollback` points
  `production` back at the version before the current one (and flips Redis to its kept copy).
- `reason`: why; recorded in the registry.

Then **publish** serves the new production version from Redis, and **smoke_check** reads it back.
"""

PARAMS = {
    "action": Param(
        "promote",
        type="string",
        enum=["promote", "rollback"],
        title="Action",
        description="promote: version -> production through the gate; rollback: previous production.",
    ),
    "version": optional(
        "string", "Model version", "The registered version to promote (see the MLflow UI). Ignored by rollback."
    ),
    "reason": Param("", type="string", minLength=3, title="Reason", description="Recorded on the model version."),
    "force": Param(
        False,
        type="boolean",
        title="Override a refused gate",
        description="Promote even if the gate refuses; the override and reason are recorded.",
    ),
}


@dag(
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "registry", "human-in-the-loop"],
    doc_md=DOC,
    params=PARAMS,
    default_args=SERVICE_RETRIES,
)
def promote_model() -> None:
    """A person's promotion or rollback decision, then publish."""

    @task(retries=0)
    def decide(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply the promotion (through the gate) or the rollback."""
        from recommender.ops.pipeline import human_decision

        p = params or {}
        return human_decision(settings(), p["action"], p.get("version"), p["reason"], bool(p.get("force")))

    @task
    def publish(decision: dict[str, Any]) -> dict[str, Any]:
        """Serve the new production version (a rollback already did)."""
        if not decision["promoted"]:
            raise AirflowSkipException(f"gate refused: {decision['reason']}")
        if "published" in decision:
            return dict(decision["published"])
        from recommender.ops.pipeline import publish_version

        return publish_version(settings(), str(decision["version"]))

    @task
    def smoke_check(published: dict[str, Any]) -> dict[str, Any]:
        """Read the served version back."""
        from recommender.ops.pipeline import smoke_check

        return smoke_check(settings(), str(published["model_version"]))

    refresh_audiences_task()(smoke_check(publish(decide())))


promote_model()
