"""The model lifecycle as whole operations: what the CLI commands and the DAG tasks call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recommender.config import Settings
from recommender.data.catalog import details_of
from recommender.data.privacy import pseudonymize
from recommender.data.profile import profile_of
from recommender.data.store import Store
from recommender.modeling.matrix import interactions_from_events, leave_last_out
from recommender.modeling.selection import budget_for, search
from recommender.modeling.training import Dataset, TrainConfig, train
from recommender.online.keys import Keys
from recommender.online.lookup import Lookup, similar_items, user_recommendations
from recommender.online.redis_conn import connect
from recommender.progress import ProgressFn, StepFn, no_progress, silent
from recommender.registry.promotion import Decision, rollback
from recommender.registry.publish import Published, publish
from recommender.registry.tracking import (
    PRODUCTION,
    Tracked,
    client,
    find_request,
    finish_selection_run,
    load_bundle,
    log_training,
    log_trial,
    start_selection_run,
)

TRAINING_COLUMNS = ("user_id", "item_id", "event_type", "timestamp")


def catalog_rows(catalog: pa.Table, vocabulary: np.ndarray) -> list[dict[str, Any]]:
    """Every item's details: the model's item columns first, in order (``{"item_id"}`` alone for one the
    catalog lacks), then the catalog's items no event names."""
    stored = {r["item_id"]: {"item_id": r["item_id"], **details_of(r)} for r in catalog.to_pylist()}
    rows = [stored.pop(str(i), {"item_id": str(i)}) for i in vocabulary]
    return rows + list(stored.values())


def load_dataset(settings: Settings, snapshot_id: int | None = None, store: Store | None = None) -> Dataset:
    """Read a snapshot (the current one by default), encode and split it."""
    started = time.monotonic()
    store = store or Store(settings)
    snapshot = snapshot_id if snapshot_id is not None else store.current_snapshot_id()
    if snapshot is None:
        raise LookupError("the events table is empty: run `recsys ingest FILE` first")
    events: pa.Table = store.read_events(snapshot, columns=TRAINING_COLUMNS)
    forgotten = store.forgotten_users()
    if len(forgotten):  # an older snapshot may predate a deletion: tombstones win
        events = events.filter(pc.invert(pc.is_in(events.column("user_id"), value_set=forgotten)))
    inter = interactions_from_events(events)
    items = catalog_rows(store.read_items(), inter.vocab.items)
    categories = np.array([r.get("category") or "" for r in items[: len(inter.vocab.items)]], dtype=object)
    split = leave_last_out(inter)
    if len(split.users) == 0:
        raise ValueError("no user has 3 or more distinct items: nothing to evaluate on")
    return Dataset(
        snapshot_id=snapshot,
        rows=events.num_rows,
        inter=inter,
        split=split,
        source=store.events().location(),
        profile=profile_of(events, settings.drift_window_days, snapshot),
        read_seconds=round(time.monotonic() - started, 3),
        categories=categories,
        items=items,
    )


@dataclass(frozen=True)
class TrainOutcome:
    """A tracked, registered training."""

    run_id: str
    experiment_id: str
    model_version: str | None
    snapshot_id: int
    family: str
    metrics: dict[str, float]
    selection_run_id: str | None = None
    """The parent run of an automatic selection (``--model auto``), whose trials are nested under it."""
    reused: bool = False
    """An earlier attempt of the same request had registered it (a retried DAG task)."""


def _reused(settings: Settings, request_id: str | None) -> TrainOutcome | None:
    """What an earlier attempt of ``request_id`` registered, if it got that far."""
    tracked = find_request(settings, request_id) if request_id else None
    if tracked is None or tracked.model_version is None:
        return None
    run = client(settings).get_run(tracked.run_id)
    tags = run.data.tags
    return TrainOutcome(
        tracked.run_id,
        tracked.experiment_id,
        tracked.model_version,
        int(tags["snapshot_id"]),
        tags["model_family"],
        dict(run.data.metrics),
        tags.get("mlflow.parentRunId"),
        reused=True,
    )


def train_and_register(
    settings: Settings, config: TrainConfig, step: StepFn = silent, request_id: str | None = None
) -> TrainOutcome:
    """Train, evaluate, log to MLflow and register as ``candidate``.

    With ``request_id`` (an Airflow DAG run), a retry returns what an earlier attempt registered.
    """
    if reused := _reused(settings, request_id):
        return reused
    step("reading snapshot")
    trained = train(settings, config, load_dataset(settings, config.snapshot_id), step)
    step("logging the run and registering the model in MLflow")
    tracked: Tracked = log_training(settings, trained, request_id=request_id)
    return TrainOutcome(
        tracked.run_id,
        tracked.experiment_id,
        tracked.model_version,
        trained.data.snapshot_id,
        config.family,
        trained.metrics(),
    )


def select_and_register(
    settings: Settings,
    snapshot_id: int | None = None,
    budget_seconds: float | None = None,
    max_trials: int | None = None,
    step: StepFn = silent,
    request_id: str | None = None,
    sequential_seconds: float | None = None,
) -> TrainOutcome:
    """``--model auto``: search on the validation item (trials as nested MLflow runs), then train the
    winner through the usual protocol (test once, refit on all) and register it as ``candidate``."""
    if reused := _reused(settings, request_id):
        return reused
    budget = settings.search_seconds if budget_seconds is None else budget_seconds
    trials = settings.search_trials if max_trials is None else max_trials
    step("reading snapshot")
    data = load_dataset(settings, snapshot_id)
    parent = start_selection_run(settings, data.snapshot_id, budget_for(data.rows, budget), trials, request_id)
    selection = search(
        settings,
        data,
        budget_seconds=budget,
        max_trials=trials,
        seed=settings.seed,
        k=settings.k,
        sequential_seconds=sequential_seconds,
        on_trial=lambda t: log_trial(settings, parent, t),
        step=step,
    )
    finish_selection_run(settings, parent, selection)
    winner = selection.best
    step(f"winner: {winner.family} (val {selection.metric} {selection.best_value:.4f}); test once, refit on all")
    trained = train(settings, winner, data, step, fitted=selection.fitted)
    tracked = log_training(
        settings, trained, run_name=f"winner-{winner.family}", parent_run_id=parent, request_id=request_id
    )
    return TrainOutcome(
        tracked.run_id,
        tracked.experiment_id,
        tracked.model_version,
        data.snapshot_id,
        winner.family,
        trained.metrics(),
        parent,
    )


def publish_model(
    settings: Settings,
    alias: str | None = PRODUCTION,
    version: str | None = None,
    progress: ProgressFn = no_progress,
    notify: StepFn = silent,
    reuse: bool = False,
    challenger: bool = False,
) -> Published:
    """Load a registered version's bundle and publish it to Redis (as the challenger, if asked)."""
    bundle, model_version = load_bundle(settings, alias, version)
    catalog = Store(settings).read_items()
    with connect(settings, notify) as r:
        return publish(r, settings, bundle, model_version, catalog, progress, reuse=reuse, challenger=challenger)


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


@dataclass(frozen=True)
class Explanation:
    """Why a user got an item: their past items that contributed most."""

    model_version: str
    family: str
    method: str
    known_user: bool
    contributions: list[tuple[str, float]]


def explain(settings: Settings, raw_user_id: str, item_id: str, n: int = 10, alias: str = PRODUCTION) -> Explanation:
    """Explain ``item_id`` for a user with the model holding ``alias`` (raw user id in, hashed as at ingest)."""
    bundle, version = load_bundle(settings, alias)
    user = int(bundle.vocab.user_rows([pseudonymize(raw_user_id, settings.hmac_secret.get_secret_value())])[0])
    item = int(bundle.vocab.item_cols([item_id])[0])
    if item < 0:
        raise LookupError(f"item {item_id!r} is not in model version {version}")
    model = bundle.model
    pairs = model.explain(user, bundle.user_items, item, n, sequences=bundle.sequences) if user >= 0 else []
    named = [(str(bundle.vocab.items[i]), round(c, 6)) for i, c in pairs]
    return Explanation(version, model.family, model.explanation, user >= 0, named)
