"""Training: snapshot -> matrix -> fit -> evaluate (against popularity) -> refit on all data.

Protocol (the same for every model): per user, chronological leave-last-out. The model is
fitted on the training events and scored against the validation item; fitted again on
training + validation and scored against the test item; and, to go on, refitted on
everything with the same parameters. The popularity baseline gets the same treatment in
the same run, so every run says how far above it the model is.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recommender.bundle import Bundle
from recommender.config import Settings
from recommender.evaluation import EvalResult, evaluate
from recommender.matrix import Interactions, Split, Weighting, confidence, interactions_from_events, leave_last_out
from recommender.models import make_model
from recommender.profile import Profile, profile_of
from recommender.progress import StepFn, silent
from recommender.store import Store

TRAINING_COLUMNS = ("user_id", "item_id", "event_type", "timestamp")


@dataclass(frozen=True)
class TrainConfig:
    """One training request."""

    family: str = "als"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    snapshot_id: int | None = None
    k: int = 10
    weighting: Weighting | None = None
    """None: the settings' event weights, no decay, no BM25."""


@dataclass(frozen=True)
class Dataset:
    """A snapshot, encoded and split."""

    snapshot_id: int
    rows: int
    inter: Interactions
    split: Split
    source: str
    profile: Profile
    """What the snapshot looked like (logged with the model: the reference of drift monitoring)."""


@dataclass
class Trained:
    """Everything a training produced, before it is tracked."""

    config: TrainConfig
    weighting: Weighting
    data: Dataset
    val: EvalResult
    test: EvalResult
    baseline_val: EvalResult
    baseline_test: EvalResult
    bundle: Bundle
    seconds: dict[str, float]

    def metrics(self) -> dict[str, float]:
        """Flat metrics with the same keys in every run (MLflow compares runs by them)."""
        out: dict[str, float] = {}
        for prefix, result in (
            ("val", self.val),
            ("test", self.test),
            ("baseline_val", self.baseline_val),
            ("baseline_test", self.baseline_test),
        ):
            # HR and NDCG at every curve cut-off too, so runs with different k compare (and gate) on the same keys
            curve = {m: v for acc in result.curve.values() for m, v in acc.items() if m.startswith(("hr_", "ndcg_"))}
            out.update({f"{prefix}_{m}": v for m, v in {**curve, **result.metrics}.items()})
        k = self.config.k
        for split in ("val", "test"):
            base = out[f"baseline_{split}_ndcg_at_{k}"]
            out[f"{split}_ndcg_lift_over_baseline"] = out[f"{split}_ndcg_at_{k}"] / base if base > 0 else 0.0
        out.update({f"seconds_{name}": v for name, v in self.seconds.items()})
        return out


def flat_params(family: str, params: dict[str, Any], weighting: Weighting) -> dict[str, Any]:
    """A configuration as MLflow params: ``family``, ``model.*``, ``weighting.*`` (the same keys in every run)."""
    return {
        "family": family,
        **{f"model.{k}": v for k, v in params.items()},
        **{f"weighting.{k}": v for k, v in asdict(weighting).items()},
    }


def load_dataset(settings: Settings, snapshot_id: int | None = None, store: Store | None = None) -> Dataset:
    """Read a snapshot (the current one by default), encode and split it."""
    store = store or Store(settings)
    snapshot = snapshot_id if snapshot_id is not None else store.current_snapshot_id()
    if snapshot is None:
        raise LookupError("the events table is empty: run `recsys ingest FILE` first")
    events: pa.Table = store.read_events(snapshot, columns=TRAINING_COLUMNS)
    forgotten = store.forgotten_users()
    if len(forgotten):  # an older snapshot may predate a deletion: tombstones win
        events = events.filter(pc.invert(pc.is_in(events.column("user_id"), value_set=forgotten)))
    inter = interactions_from_events(events)
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
    )


def default_weighting(settings: Settings) -> Weighting:
    """Event-type weights from settings; no decay, no BM25."""
    return Weighting(event_weights=dict(settings.event_weights))


def fit_and_score(
    data: Dataset,
    mask: np.ndarray,
    targets: np.ndarray,
    family: str,
    params: dict[str, Any],
    seed: int,
    weighting: Weighting,
    k: int,
) -> EvalResult:
    """Fit on the events in ``mask`` and rank each evaluated user's target."""
    matrix = confidence(data.inter, mask, weighting)
    model = make_model(family, params, seed)
    model.fit(matrix)
    return evaluate(model, matrix, data.split.users, targets, k=k)


def train(settings: Settings, config: TrainConfig, step: StepFn = silent, data: Dataset | None = None) -> Trained:
    """Evaluate ``config`` on the validation and test items, then refit on all the data."""
    weighting = config.weighting or default_weighting(settings)
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name] = round(now - clock, 3)
        clock = now

    step("reading snapshot")
    data = data or load_dataset(settings, config.snapshot_id)
    lap("read")
    split, args = data.split, (config.seed, weighting, config.k)
    step(f"fitting {config.family} on train, scoring validation items of {len(split.users):,} users")
    val = fit_and_score(data, split.train, split.val_items, config.family, config.params, *args)
    step("fitting on train+validation, scoring test items")
    test = fit_and_score(data, split.train_val, split.test_items, config.family, config.params, *args)
    lap("evaluate")
    step("popularity baseline")
    base_val = fit_and_score(data, split.train, split.val_items, "popular", {}, *args)
    base_test = fit_and_score(data, split.train_val, split.test_items, "popular", {}, *args)
    lap("baseline")
    step(f"refitting {config.family} on all {data.rows:,} events")
    everything = np.ones(len(data.inter), dtype=bool)
    matrix = confidence(data.inter, everything, weighting)
    model = make_model(config.family, config.params, config.seed)
    model.fit(matrix)
    lap("refit")
    bundle = Bundle(
        model=model,
        vocab=data.inter.vocab,
        weighting=weighting,
        user_items=matrix,
        info={
            "family": config.family,
            "params": model.params,
            "seed": config.seed,
            "snapshot_id": data.snapshot_id,
            "k": config.k,
        },
    )
    return Trained(
        config=config,
        weighting=weighting,
        data=data,
        val=val,
        test=test,
        baseline_val=base_val,
        baseline_test=base_test,
        bundle=bundle,
        seconds=seconds,
    )
