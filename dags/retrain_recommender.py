"""Retrain: snapshot -> train + evaluate -> candidate -> staging -> gate -> production -> publish -> smoke check."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException
from recsys_common import INTERACTIONS, SERVICE_RETRIES, WRITERS, optional, refresh_audiences_task, settings

log = logging.getLogger(__name__)

DOC = """
### Retrain the recommender
Runs when `ingest_interactions` stored new events (the `interactions` Asset), weekly, or on
demand: **Trigger** opens a form with the model family, its hyperparameters, event-type
weights, recency decay, the metric cut-off, the snapshot and whether to promote automatically.
Empty fields keep the defaults.

1. **pick_snapshot**: the requested Iceberg snapshot, or the newest (the run is skipped while
   nothing was ingested: a weekly run on a new installation is not a failure).
2. **train_and_evaluate**: leave-last-out evaluation against the popularity baseline, refit on
   all data; the run is tracked in MLflow (compare runs in the MLflow UI) and the model is
   registered as `candidate`.
3. **stage**: alias `staging`.
4. **gate_and_promote**: the quality gate (must beat popularity and stay within the tolerance of
   production). Passed: alias `production`. Refused: the run still ends successfully, the reason
   is in this task's log and on the model version's tags, and production stays as it was.
5. **publish**: start the new Redis version (popular lists, catalog) and split the users and
   items into `RECSYS_PUBLISH_SHARDS` parts (skipped when not promoted).
6. **publish_shard**: one mapped task per part scores its users and similar items (in
   parallel on Celery or Kubernetes workers).
7. **flip_version**: after every shard succeeded, the atomic flip to the new version; a failed
   shard leaves the previous version served.
8. **smoke_check**: Redis and the API serve the new version with non-empty lists.
9. **export**: when `RECSYS_EXPORT_PLACEMENT` names a placement, every user's list of it, as served, to the
   Iceberg table `recommendations` (or to files at `RECSYS_EXPORT_TO`); otherwise it returns `skipped`.
"""

PARAMS = {
    "model": Param(
        "als",
        type="string",
        enum=["auto", "als", "bpr", "itemknn", "sequential", "popular"],
        title="Model family",
        description="auto: search families, hyperparameters and weightings on the validation item, and blend "
        "the best sequential model with the best other one (budgets below; the fields further down are then "
        "ignored); als: matrix factorization; bpr: pairwise ranking; itemknn: item-item neighbours; "
        "sequential: a SASRec transformer over each user's recent items; popular: the baseline itself.",
    ),
    "factors": optional("integer", "Factors (ALS, BPR)", "Latent dimensions. Empty: 64.", minimum=1, maximum=1024),
    "iterations": optional(
        "integer", "Iterations (ALS, BPR)", "Empty: 15 for ALS, 100 for BPR.", minimum=1, maximum=1000
    ),
    "regularization": optional(
        "number", "Regularization (ALS, BPR)", "L2 penalty. Empty: 0.05 for ALS, 0.01 for BPR.", minimum=0
    ),
    "alpha": optional(
        "number", "Confidence alpha (ALS)", "Scales the confidence of observed interactions. Empty: 2.0.", minimum=0
    ),
    "learning_rate": optional(
        "number", "Learning rate (BPR, sequential)", "Empty: 0.05 for BPR, 0.002 for sequential.", minimum=0
    ),
    "hidden": optional("integer", "Hidden size (sequential)", "Embedding width. Empty: 64.", minimum=2, maximum=1024),
    "blocks": optional("integer", "Transformer blocks (sequential)", "Empty: 2.", minimum=1, maximum=12),
    "max_len": optional(
        "integer", "Sequence length (sequential)", "The newest items read per user. Empty: 50.", minimum=2
    ),
    "dropout": optional("number", "Dropout (sequential)", "Empty: 0.3.", minimum=0, maximum=0.95),
    "epochs": optional(
        "integer",
        "Most epochs (sequential)",
        "Training stops earlier when validation NDCG@10 stops rising. Empty: 200.",
        minimum=1,
    ),
    "K": optional("integer", "Neighbours (item-KNN)", "Similar items kept per item. Empty: 100.", minimum=1),
    "similarity": optional("string", "Similarity (item-KNN)", "Empty: bm25.", enum=[None, "bm25", "cosine"]),
    "event_weights": optional(
        "object",
        "Event-type weights",
        'e.g. {"view": 1, "add_to_cart": 4, "purchase": 8}. Empty: RECSYS_EVENT_WEIGHTS.',
    ),
    "half_life_days": optional(
        "number",
        "Time decay half-life (days)",
        "An event this many days older than the newest counts half. Empty: no decay.",
        exclusiveMinimum=0,
    ),
    "recency_half_life": optional(
        "number",
        "Per-user recency half-life (events)",
        "A user's event this many events before their latest counts half. Empty: off.",
        exclusiveMinimum=0,
    ),
    "bm25": Param(
        False,
        type="boolean",
        title="BM25-weight the matrix",
        description="Damp heavy users and popular items before fitting.",
    ),
    "budget_seconds": optional(
        "number",
        "Search budget in seconds (auto)",
        "Time the automatic selection may search. Empty: RECSYS_SEARCH_SECONDS (420).",
        exclusiveMinimum=0,
    ),
    "sequential_seconds": optional(
        "number",
        "Sequential search budget in seconds (auto)",
        "Time the sequential family's trials may take, on top. 0: none. Empty: RECSYS_SEARCH_SEQUENTIAL_SECONDS.",
        minimum=0,
    ),
    "k": optional(
        "integer",
        "Metric cut-off k",
        "HR@k, NDCG@k, ... are reported at this k (and at 1, 5, 10, 20, 50). Empty: RECSYS_K.",
        minimum=1,
        maximum=1000,
    ),
    "seed": optional("integer", "Random seed", "Empty: RECSYS_SEED.", minimum=0),
    "snapshot_id": optional(
        "integer", "Snapshot id", "Train on this Iceberg snapshot (see `recsys snapshots`). Empty: the newest."
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
        """The snapshot to train on (the run is skipped while nothing was ingested)."""
        from recommender.ops.pipeline import current_snapshot

        snapshot = current_snapshot(settings(), (params or {}).get("snapshot_id"))
        if snapshot is None:
            raise AirflowSkipException("the events table is empty: nothing to train on until an ingest stores events")
        return snapshot

    @task(retries=1)
    def train_and_evaluate(
        snapshot_id: int, params: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Train, evaluate, track in MLflow, register as candidate (a retry reuses what its run registered)."""
        from recommender.ops.pipeline import train_candidate

        return train_candidate(settings(), params or {}, snapshot_id, request_id=f"retrain_recommender/{run_id}")

    @task
    def stage(trained: dict[str, Any]) -> dict[str, Any]:
        """Alias the new version ``staging``."""
        from recommender.ops.pipeline import stage

        return stage(settings(), trained["model_version"])

    @task
    def gate_and_promote(staged: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The quality gate; ``production`` moves only when it passes."""
        from recommender.ops.pipeline import gate_and_promote

        decision = gate_and_promote(settings(), staged["version"], bool((params or {}).get("auto_promote", True)))
        log.log(logging.INFO if decision["promoted"] else logging.WARNING, "gate: %(decision)s: %(reason)s", decision)
        return decision

    @task
    def publish(decision: dict[str, Any]) -> list[dict[str, Any]]:
        """Start serving the promoted version from Redis: its parts (skipped when the gate refused it)."""
        if not decision["promoted"]:
            raise AirflowSkipException(f"not promoted ({decision['decision']}): {decision['reason']}")
        from recommender.ops.pipeline import plan_publish

        return plan_publish(settings(), str(decision["version"]))

    @task(map_index_template="{{ shard_label }}")
    def publish_shard(part: dict[str, Any]) -> dict[str, Any]:
        """Score and write one part of the users and similar items."""
        from airflow.sdk import get_current_context

        from recommender.ops.pipeline import publish_part

        get_current_context()["shard_label"] = f"shard {part['shard'] + 1} of {part['shards']}"  # type: ignore[typeddict-unknown-key]
        return publish_part(settings(), part)

    @task
    def flip_version(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The atomic flip, once every part is written."""
        from recommender.ops.pipeline import flip_published

        return flip_published(settings(), list(parts))

    @task
    def smoke_check(published: dict[str, Any]) -> dict[str, Any]:
        """Read the new lists back from Redis (and the API when RECSYS_API_URL is set)."""
        from recommender.ops.pipeline import smoke_check

        return smoke_check(settings(), str(published["model_version"]))

    @task(**WRITERS)
    def export(checked: dict[str, Any]) -> dict[str, Any]:
        """Every user's list of RECSYS_EXPORT_PLACEMENT to the recommendations table (or RECSYS_EXPORT_TO)."""
        from recommender.ops.pipeline import export_served

        return export_served(settings())  # {"skipped": ...} when no export is asked for

    trained = train_and_evaluate(pick_snapshot())
    parts = publish_shard.expand(part=publish(gate_and_promote(stage(trained))))
    checked = smoke_check(flip_version(parts))
    export(checked)
    refresh_audiences_task()(checked)


retrain_recommender()
