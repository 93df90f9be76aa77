"""Automatic model selection (``recsys train --model auto``): an Optuna search on the validation item only.

Every trial fits on the training events and ranks each user's validation item (the second to
last); the test item is never looked at here. The search covers the model families, their main
hyperparameters and the data weighting (event-type weights, global time decay, per-user recency,
BM25 or log scaling). It starts from each family's defaults, then Optuna's TPE sampler explores,
until the time budget or the trial cap is spent. The sequential family, whose trials take minutes
where the others take seconds, has a budget of its own: its defaults first, then TPE over its
size, dropout and learning rate, each trial early-stopped on the validation item. Last, the best
sequential model is blended with the best of the others (fusion and weight chosen on the same
validation item, :func:`recommender.modeling.blend.choose`). The winner is returned as a
:class:`TrainConfig` for the usual protocol (test once, refit on all, register, gate), with its
validation fit, so that it is not trained twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recommender.config import Settings
from recommender.modeling.blend import BlendModel, choose
from recommender.modeling.evaluation import EvalResult, evaluate
from recommender.modeling.families import MODELS
from recommender.modeling.matrix import Weighting
from recommender.modeling.models import Model
from recommender.modeling.training import Dataset, TrainConfig, fit_and_score, flat_params, history
from recommender.progress import StepFn, silent

SEARCH_FAMILIES = ("itemknn", "als", "bpr", "popular", "sequential")
ORDERED = ("sequential",)
"""Families searched on their own budget (``search_sequential_seconds``)."""


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate."""

    number: int
    family: str
    params: dict[str, Any]
    weighting: Weighting
    metrics: dict[str, float]
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per epoch, for families trained in epochs (logged as MLflow step metrics)."""

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
    fits: dict[int, tuple[Model, EvalResult]] = field(default_factory=dict)
    """Validation fits kept, by trial number: the best model that reads order, the best other, the blend."""
    winner: int = -1

    @property
    def fitted(self) -> tuple[Model, EvalResult] | None:
        """The winner's validation fit (train() reuses it instead of fitting again)."""
        return self.fits.get(self.winner)


def budget_for(rows: int, budget_seconds: float, per_event: float = 1e-3) -> float:
    """The time budget, scaled down for small data (``per_event`` seconds per event, at least 20 s)."""
    return float(min(budget_seconds, max(20.0, rows * per_event)))


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
    if family == "sequential":
        return {
            "hidden": trial.suggest_categorical("seq_hidden", [32, 64, 128]),
            "blocks": trial.suggest_int("seq_blocks", 1, 3),
            "dropout": trial.suggest_float("seq_dropout", 0.1, 0.6),
            "learning_rate": trial.suggest_float("seq_learning_rate", 3e-4, 3e-3, log=True),
            "max_len": trial.suggest_categorical("seq_max_len", [20, 50, 100]),
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
    sequential_seconds: float | None = None,
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
    seq_seconds = settings.search_sequential_seconds if sequential_seconds is None else sequential_seconds
    seq_budget = budget_for(data.rows, seq_seconds, per_event=1e-2) if seq_seconds > 0 else 0.0
    trials: list[Trial] = []
    kept: dict[bool, tuple[Trial, Model, EvalResult]] = {}  # the best fitted model that reads order / does not
    fits: dict[int, tuple[Model, EvalResult]] = {}  # the kept models and the blend, by trial number
    started = time.monotonic()

    def scored(family: str, params: dict[str, Any], weighting: Weighting) -> float:
        clock = time.monotonic()
        ordered = MODELS[family].uses_order
        model, result = fit_and_score(
            data, data.split.train, data.split.val_items, family, params, seed, weighting, k,
            early_stop=True, report=step if ordered else silent,
        )  # fmt: skip
        seconds, curve = round(time.monotonic() - clock, 3), list(getattr(model, "history", []))
        return record(Trial(len(trials), family, params, weighting, result.metrics, seconds, curve), model, result)

    def record(done: Trial, model: Model, result: EvalResult) -> float:
        trials.append(done)
        value = result.metrics[metric]
        group = model.uses_order
        if done.family == "blend":
            fits[done.number] = (model, result)
        elif done.family != "popular" and (group not in kept or value > kept[group][0].metrics[metric]):
            if group in kept:
                fits.pop(kept[group][0].number, None)
            kept[group], fits[done.number] = (done, model, result), (model, result)
        best = max(t.metrics[metric] for t in trials)
        step(f"trial {done.number} {done.family}: val {metric} {value:.4f} (best {best:.4f})")
        if on_trial is not None:
            on_trial(done)
        return float(value)

    plain = [f for f in families if f not in ORDERED]
    if plain:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True)
        )
        for point in _starting_points(settings, present):
            if point["family"] in plain:
                study.enqueue_trial(point, skip_if_exists=True)

        def objective(trial: Any) -> float:
            family = trial.suggest_categorical("family", plain)
            if family == "popular" and any(t.family == "popular" for t in trials):
                raise optuna.TrialPruned("popularity has nothing to tune")
            return scored(family, _params(trial, family), _weighting(trial, settings, present, family))

        study.optimize(objective, n_trials=max_trials, timeout=budget, gc_after_trial=False)
    if "sequential" in families and seq_budget > 0:
        _sequential_trials(settings, seq_budget, max_trials, seed, scored, step)
    if True in kept and False in kept:
        record(*_blend(data, kept[True], kept[False], seed, k, len(trials)))
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
    seconds = round(time.monotonic() - started, 3)
    return Selection(best, winner.metrics[metric], metric, trials, budget + seq_budget, seconds, fits, winner.number)


def _sequential_trials(
    settings: Settings,
    budget: float,
    max_trials: int,
    seed: int,
    scored: Callable[[str, dict[str, Any], Weighting], float],
    step: StepFn,
) -> None:
    """The sequential family on its own budget: its defaults first, then TPE; each trial capped by what is left."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    defaults = MODELS["sequential"].defaults
    study.enqueue_trial(
        {f"seq_{name}": defaults[name] for name in ("hidden", "blocks", "dropout", "learning_rate", "max_len")}
    )
    deadline = time.monotonic() + budget
    step(f"sequential family: {budget:.0f} s")
    first: list[float] = []  # how long the first (default) trial took

    def objective(trial: Any) -> float:
        left = deadline - time.monotonic()
        if first and left < first[0] / 2:  # a trial cut at a fraction of the epochs it needs says nothing
            study.stop()
            raise optuna.TrialPruned(f"{left:.0f} s left, the first trial took {first[0]:.0f} s")
        clock = time.monotonic()
        params = _params(trial, "sequential") | {"max_seconds": round(max(left, 1.0), 1)}
        value = scored("sequential", params, Weighting(event_weights=dict(settings.event_weights)))
        first.append(time.monotonic() - clock)
        return value

    study.optimize(objective, n_trials=max_trials, timeout=budget, gc_after_trial=True)


def _blend(
    data: Dataset,
    ordered: tuple[Trial, Model, EvalResult],
    plain: tuple[Trial, Model, EvalResult],
    seed: int,
    k: int,
    number: int,
) -> tuple[Trial, Model, EvalResult]:
    """The best sequential model and the best other one fused, fusion and weight chosen on the validation item."""
    clock = time.monotonic()
    (_, a, _), (plain_trial, b, _) = ordered, plain
    matrix, seqs = history(data, data.split.train, plain_trial.weighting)
    users, targets, depth = data.split.users, data.split.val_items, int(BlendModel.defaults["depth"])
    fusion, weight, _ = choose(
        a.recommend(users, matrix, depth, sequences=seqs), b.recommend(users, matrix, depth, sequences=seqs), targets, k
    )
    blend = BlendModel.of(a, b, fusion, weight, seed)
    result = evaluate(blend, matrix, users, targets, k=k, sequences=seqs)
    seconds = round(time.monotonic() - clock, 3)
    return Trial(number, "blend", blend.params, plain_trial.weighting, result.metrics, seconds), blend, result
