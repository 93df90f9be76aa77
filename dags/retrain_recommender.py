"""Retrain: snapshot -> train + evaluate -> candidate -> staging -> gate -> production -> publish -> smoke check."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from recsys_common import INTERACTIONS, SERVICE_RETRIES, settings

log = logging.getLogger(__name__)

DOC = """
### Retrain the recommender
Runs when `ingest_interactions` stored new events (the `interactions` Asset), weekly, or on
demand: **Trigger** opens a form with the model family, its hyperparameters, event-type
weights, recency decay, the metric cut-off, the snapshot and whether to promote automatically.
Empty fields keep the defaults.

1. **pick_snapshot**: the requested Iceberg snapshot, or the newest.
2. **train_and_evaluate**: leave-last-out evaluation against the popularity baseline, refit on
   all data; the run is tracked in MLflow (compare runs in the MLflow UI) and the model is
   registered as `candidate`.
3. **stage**: alias `staging`.
4. **gate_and_promote**: the quality gate (must beat popularity and stay within the tolerance of
   production). Passed: alias `production`. Refused: the run still ends successfully, the reason
   is in this task's log and on the model version's tags, and production stays as it was.
5. **publish**: precomputed lists to Redis, atomic flip (skipped when not promoted).
6. **smoke_check**: Redis and the API serve the new version with non-empty lists.
"""

OPTIONAL_INT = ["null", "integer"]
OPTIONAL_NUMBER = ["null", "number"]
PARAMS = {
    "model": Param(
        "als",
        type="string",
        enum=["auto", "als", "bpr", "itemknn", "popular"],
        title="Model family",
        description="auto: search families, hyperparameters and weightings on the validation item "
        "(budget below; the fields further down are then ignored); als: matrix factorization; "
        "bpr: pairwise ranking; itemknn: item-item neighbours; popular: the baseline itself.",
    ),
    "factors": Param(
        None,
        type=OPTIONAL_INT,
        minimum=1,
        maximum=1024,
        title="Factors (ALS, BPR)",
        description="Latent dimensions. Empty: 64.",
    ),
    "iterations": Param(
        None,
        type=OPTIONAL_INT,
        minimum=1,
        maximum=1000,
        title="Iterations (ALS, BPR)",
        description="Empty: 15 for ALS, 100 for BPR.",
    ),
    "regularization": Param(
        None,
        type=OPTIONAL_NUMBER,
        minimum=0,
        title="Regularization (ALS, BPR)",
        description="L2 penalty. Empty: 0.05 for ALS, 0.01 for BPR.",
    ),
    "alpha": Param(
        None,
        type=OPTIONAL_NUMBER,
        minimum=0,
        title="Confidence alpha (ALS)",
        description="Scales the confidence of observed interactions. Empty: 2.0.",
    ),
    "learning_rate": Param(
        None, type=OPTIONAL_NUMBER, minimum=0, title="Learning rate (BPR)", description="Empty: 0.05."
    ),
    "K": Param(
        None,
        type=OPTIONAL_INT,
        minimum=1,
        maximum=5000,
        title="Neighbours (item-KNN)",
        description="Similar items kept per item. Empty: 100.",
    ),
    "similarity": Param(
        None,
        type=["null", "string"],
        enum=[None, "bm25", "cosine"],
        title="Similarity (item-KNN)",
        description="Empty: bm25.",
    ),
    "event_weights": Param(
        None,
        type=["null", "object"],
        title="Event-type weights",
        description='e.g. {"view": 1, "add_to_cart": 4, "purchase": 8}. Empty: RECSYS_EVENT_WEIGHTS.',
    ),
    "half_life_days": Param(
        None,
        type=OPTIONAL_NUMBER,
        exclusiveMinimum=0,
        title="Time decay half-life (days)",
        description="An event this many days older than the newest counts half. Empty: no decay.",
    ),
    "recency_half_life": Param(
        None,
        type=OPTIONAL_NUMBER,
        exclusiveMinimum=0,
        title="Per-user recency half-life (events)",
        description="A user's event this many events before their latest counts half. Empty: off.",
    ),
    "budget_seconds": Param(
        None,
        type=OPTIONAL_NUMBER,
        exclusiveMinimum=0,
        title="Search budget in seconds (auto)",
        description="Time the automatic selection may search. Empty: RECSYS_SEARCH_SECONDS (420).",
    ),
    "bm25": Param(
        False,
        type="boolean",
        title="BM25-weight the matrix",
        description="Damp heavy users and popular items before fitting.",
    ),
    "k": Param(
        None,
        type=OPTIONAL_INT,
        minimum=1,
        maximum=1000,
        title="Metric cut-off k",
        description="HR@k, NDCG@k, ... are reported at this k (and at 1, 5, 10, 20, 50). Empty: RECSYS_K.",
    ),
    "seed": Param(None, type=OPTIONAL_INT, minimum=0, title="Random seed", description="Empty: RECSYS_SEED."),
    "snapshot_id": Param(
        None,
        type=OPTIONAL_INT,
        title="Snapshot id",
        description="Train on this Iceberg snapshot (see `recsys snapshots`). Empty: the newest.",
    ),
    "auto_promote": Param(
        True,
        type="boolean",
        title="Promote automatically",
        description="Off: stop at staging; a human promotes with promote_model.",
    ),
}


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("@weekly", timezone="UTC"), assets=[INTERACTIONS]),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "training", "registry"],
    doc_md=DOC,
    params=PARAMS,
    default_args=SERVICE_RETRIES,
)
def retrain_recommender() -> None:
    """Continuous training behind the quality gate."""

    @task
    def pick_snapshot(params: dict[str, Any] | None = None) -> int:
        """The snapshot to train on."""
        from recommender.pipeline import current_snapshot

        return current_snapshot(settings(), (params or {}).get("snapshot_id"))

    @task(retries=1)
    def train_and_evaluate(snapshot_id: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train, evaluate, track in MLflow, register as candidate."""
        from recommender.pipeline import train_candidate

        return train_candidate(settings(), params or {}, snapshot_id)

    @task
    def stage(trained: dict[str, Any]) -> dict[str, Any]:
        """Alias the new version ``staging``."""
        from recommender.pipeline import stage

        return stage(settings(), trained["model_version"])

    @task
    def gate_and_promote(staged: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The quality gate; ``production`` moves only when it passes."""
        from recommender.pipeline import gate_and_promote

        decision = gate_and_promote(settings(), staged["version"], bool((params or {}).get("auto_promote", True)))
        log.log(logging.INFO if decision["promoted"] else logging.WARNING, "gate: %(decision)s: %(reason)s", decision)
        return decision

    @task
    def publish(decision: dict[str, Any]) -> dict[str, Any]:
        """Serve the promoted version from Redis (skipped when the gate refused it)."""
        if not decision["promoted"]:
            raise AirflowSkipException(f"not promoted ({decision['decision']}): {decision['reason']}")
        from recommender.pipeline import publish_version

        return publish_version(settings(), str(decision["version"]))

    @task
    def smoke_check(published: dict[str, Any]) -> dict[str, Any]:
        """Read the new lists back from Redis (and the API when RECSYS_API_URL is set)."""
        from recommender.pipeline import smoke_check

        return smoke_check(settings(), str(published["model_version"]))

    trained = train_and_evaluate(pick_snapshot())
    smoke_check(publish(gate_and_promote(stage(trained))))


retrain_recommender()
