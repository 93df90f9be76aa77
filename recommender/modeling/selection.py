"""Automatic model selection (``recsys train --model auto``): an Optuna search on the validation item only.

Every trial fits on the training events and ranks each user's validation item (the second to
last); the test item is never looked at here. The search covers the model families, their main
hyperparameters and the data weighting (event-type weights, global time decay, per-user recency,
BM25 or log scaling). It starts from each family's defaults, then Optuna's TPE sampler explores,
until the time budget or the trial cap is spent. The winner is returned as a :class:`TrainConfig`
for the usual protocol (test once, refit on all, register, gate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recommender.config import Settings
from recommender.modeling.matrix import Weighting
from recommender.modeling.models import MODELS
from recommender.modeling.training import Dataset, TrainConfig, fit_and_score, flat_params
from recommender.progress import StepFn, silent

SEARCH_FAMILIES = ("itemknn", "als", "bpr", "popular")


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate."""

    number: int
    family: str
    params: dict[str, Any]
    weighting: Weighting
    metrics: dict[str, float]
    seconds: float

    @property
    def flat_params(self) -> dict[str, Any]:
        """Params as logged to MLflow (same keys as a plain training run)."""
        return flat_params(self.family, self.params, self.weighting)


@dataclass
class Selection:
    """The search's outcome."""

    best: TrainConfig
    best_value: float
    metric: str
    trials: list[Trial] = field(default_factory=list)
    budget_seconds: float = 0.0
    seconds: float = 0.0


def budget_for(rows: int, budget_seconds: float) -> float:
    """The time budget, scaled down for small data (about 1 s per 1,000 events, at least 20 s)."""
    return float(min(budget_seconds, max(20.0, rows / 1_000)))


def _weighting(trial: Any, settings: Settings, present: tuple[str, ...], family: str) -> Weighting:
    weights = dict(settings.event_weights)
    base = min(present, key=lambda t: weights.get(t, 1.0)) if present else None
    for name in present:
        if name != base:  # the lightest present type stays at its configured weight; the others relative to it
            weights[name] = trial.suggest_float(f"weight_{name}", 1.0, 30.0, log=True) * weights.get(base or name, 1.0)
    decay = trial.suggest_categorical("decay", ["none", "global", "recency", "both"])
    half_life = trial.suggest_float("half_life_days", 1.0, 720.0, log=True) if decay in ("global", "both") else None
    recency = trial.suggest_float("recency_half_life", 0.5, 200.0, log=True) if decay in ("recency", "both") else None
    scaling = "none" if family == "itemknn" else trial.suggest_categorical("scaling", ["none", "log", "bm25"])
    return Weighting(
        event_weights=weights,
        half_life_days=half_life,
        recency_half_life=recency,
        bm25=scaling == "bm25",
        log_scale=scaling == "log",
    )


def _params(trial: Any, family: str) -> dict[str, Any]:
    if family == "als":
        return {
            "factors": trial.suggest_int("als_factors", 16, 256, log=True),
            "regularization": trial.suggest_float("als_regularization", 1e-3, 10.0, log=True),
            "alpha": trial.suggest_float("als_alpha", 0.1, 50.0, log=True),
            "iterations": trial.suggest_int("als_iterations", 5, 30),
        }
    if family == "bpr":
        return {
            "factors": trial.suggest_int("bpr_factors", 16, 256, log=True),
            "learning_rate": trial.suggest_float("bpr_learning_rate", 1e-3, 0.2, log=True),
            "regularization": trial.suggest_float("bpr_regularization", 1e-5, 0.1, log=True),
            "iterations": trial.suggest_int("bpr_iterations", 20, 300, log=True),
        }
    if family == "itemknn":
        similarity = trial.suggest_categorical("knn_similarity", ["bm25", "cosine"])
        params: dict[str, Any] = {"similarity": similarity, "K": trial.suggest_int("knn_K", 10, 2000, log=True)}
        if similarity == "bm25":
            params |= {"K1": trial.suggest_float("knn_K1", 0.3, 3.0), "B": trial.suggest_float("knn_B", 0.0, 1.0)}
        return params
    return {}


PREFIX = {"als": "als_", "bpr": "bpr_", "itemknn": "knn_"}


def _starting_points(settings: Settings, present: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each family at its defaults (configured event weights), with and without per-user recency."""
    configured = settings.event_weights
    weights = {f"weight_{t}": configured.get(t, 1.0) / configured.get(present[0], 1.0) for t in present[1:]}
    points: list[dict[str, Any]] = [{"family": "popular", "decay": "none", "scaling": "none", **weights}]
    for family, prefix in PREFIX.items():
        defaults = {prefix + k: v for k, v in MODELS[family].defaults.items()}
        for decay in ("none", "recency"):
            point: dict[str, Any] = {"family": family, "decay": decay, **defaults, **weights}
            point |= {} if family == "itemknn" else {"scaling": "none"}
            point |= {"recency_half_life": 5.0} if decay == "recency" else {}
            points.append(point)
    return points


def search(
    settings: Settings,
    data: Dataset,
    *,
    budget_seconds: float,
    max_trials: int,
    seed: int = 0,
    k: int = 10,
    families: tuple[str, ...] = SEARCH_FAMILIES,
    on_trial: Callable[[Trial], None] | None = None,
    step: StepFn = silent,
) -> Selection:
    """Search ``families`` on the validation item of ``data``; returns the best configuration."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = f"ndcg_at_{k}"
    used = np.unique(data.inter.event_type[data.split.train])
    present = tuple(sorted((data.inter.event_types[i] for i in used), key=lambda t: settings.event_weights.get(t, 1)))
    budget = budget_for(data.rows, budget_seconds)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    for point in _starting_points(settings, present):
        if point["family"] in families:
            study.enqueue_trial(point, skip_if_exists=True)
    trials: list[Trial] = []
    started = time.monotonic()

    def objective(trial: Any) -> float:
        family = trial.suggest_categorical("family", list(families))
        if family == "popular" and any(t.family == "popular" for t in trials):
            raise optuna.TrialPruned("popularity has nothing to tune")
        params, weighting = _params(trial, family), _weighting(trial, settings, present, family)
        clock = time.monotonic()
        result = fit_and_score(data, data.split.train, data.split.val_items, family, params, seed, weighting, k)
        done = Trial(len(trials), family, params, weighting, result.metrics, round(time.monotonic() - clock, 3))
        trials.append(done)
        best = max(t.metrics[metric] for t in trials)
        step(f"trial {done.number} {family}: val {metric} {result.metrics[metric]:.4f} (best {best:.4f})")
        if on_trial is not None:
            on_trial(done)
        return float(result.metrics[metric])

    study.optimize(objective, n_trials=max_trials, timeout=budget, gc_after_trial=False)
    if not trials:
        raise RuntimeError("the search finished no trial: raise RECSYS_SEARCH_SECONDS")
    winner = max(trials, key=lambda t: (t.metrics[metric], -t.number))
    best = TrainConfig(
        family=winner.family,
        params=winner.params,
        seed=seed,
        snapshot_id=data.snapshot_id,
        k=k,
        weighting=winner.weighting,
    )
    return Selection(best, winner.metrics[metric], metric, trials, budget, round(time.monotonic() - started, 3))
