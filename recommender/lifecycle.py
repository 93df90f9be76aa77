"""The model lifecycle as whole operations: what the CLI commands and the DAG tasks call."""

from __future__ import annotations

from dataclasses import dataclass

from recommender.config import Settings
from recommender.keys import Keys
from recommender.lookup import Lookup, similar_items, user_recommendations
from recommender.privacy import pseudonymize
from recommender.progress import ProgressFn, StepFn, no_progress, silent
from recommender.promotion import Decision, rollback
from recommender.publish import Published, publish
from recommender.redis_conn import connect
from recommender.store import Store
from recommender.tracking import PRODUCTION, Tracked, load_bundle, log_training
from recommender.training import TrainConfig, train


@dataclass(frozen=True)
class TrainOutcome:
    """A tracked, registered training."""

    run_id: str
    experiment_id: str
    model_version: str | None
    snapshot_id: int
    family: str
    metrics: dict[str, float]


def train_and_register(settings: Settings, config: TrainConfig, step: StepFn = silent) -> TrainOutcome:
    """Train, evaluate, log to MLflow and register as ``candidate``."""
    trained = train(settings, config, step)
    step("logging the run and registering the model in MLflow")
    tracked: Tracked = log_training(settings, trained)
    return TrainOutcome(
        tracked.run_id,
        tracked.experiment_id,
        tracked.model_version,
        trained.data.snapshot_id,
        config.family,
        trained.metrics(),
    )


def publish_model(
    settings: Settings,
    alias: str | None = PRODUCTION,
    version: str | None = None,
    progress: ProgressFn = no_progress,
    notify: StepFn = silent,
    reuse: bool = False,
) -> Published:
    """Load a registered version's bundle and publish it to Redis."""
    bundle, model_version = load_bundle(settings, alias, version)
    catalog = Store(settings).read_items()
    with connect(settings, notify) as r:
        return publish(r, settings, bundle, model_version, catalog, progress, reuse=reuse)


def rollback_and_republish(
    settings: Settings, reason: str, progress: ProgressFn = no_progress, notify: StepFn = silent
) -> tuple[Decision, Published]:
    """Move ``production`` back one version and serve it (a kept copy is flipped to instantly)."""
    decision = rollback(settings, reason)
    return decision, publish_model(settings, None, decision.version, progress, notify, reuse=True)


def recommend(settings: Settings, raw_user_id: str, n: int, notify: StepFn = silent) -> Lookup:
    """A user's published recommendations (raw id in, hashed as at ingest)."""
    with connect(settings, notify) as r:
        user = pseudonymize(raw_user_id, settings.hmac_secret.get_secret_value())
        return user_recommendations(r, Keys(settings.redis_prefix), user, n)


def similar(settings: Settings, item_id: str, n: int, notify: StepFn = silent) -> Lookup:
    """Published similar items of ``item_id``."""
    with connect(settings, notify) as r:
        return similar_items(r, Keys(settings.redis_prefix), item_id, n)
