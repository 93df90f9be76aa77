"""Training: a dataset (a snapshot encoded and split) -> fit -> evaluate (against popularity) -> refit on all data.

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
import scipy.sparse as sp

from recommender.config import Settings
from recommender.data.profile import Profile
from recommender.modeling.bundle import Bundle
from recommender.modeling.calibration import rank_calibration
from recommender.modeling.content import fit_content
from recommender.modeling.evaluation import EvalResult, evaluate
from recommender.modeling.families import make_model
from recommender.modeling.matrix import Interactions, Sequences, Split, Weighting, confidence, sequences
from recommender.modeling.models import Model, Validation
from recommender.modeling.together import baskets, evaluate_together, last_purchases, repurchase_intervals, together
from recommender.progress import StepFn, silent


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
    read_seconds: float = 0.0
    categories: np.ndarray | None = None
    """Each item column's catalog category ("" when unknown), for the repurchase intervals."""
    items: list[dict[str, Any]] = field(default_factory=list)
    """Every item's catalog details: the item columns first, in order, then the items no event names."""


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
    extra_metrics: dict[str, float] = field(default_factory=dict)
    """Frequently-bought-together against its popularity baseline."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per epoch (models trained in epochs): loss and validation metrics, logged as MLflow step metrics."""

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
        out.update(self.extra_metrics)
        out.update({f"seconds_{name}": v for name, v in self.seconds.items()})
        return out


def flat_params(family: str, params: dict[str, Any], weighting: Weighting) -> dict[str, Any]:
    """A configuration as MLflow params: ``family``, ``model.*``, ``weighting.*`` (the same keys in every run)."""
    return {
        "family": family,
        **{f"model.{k}": v for k, v in params.items()},
        **{f"weighting.{k}": v for k, v in asdict(weighting).items()},
    }


def default_weighting(settings: Settings) -> Weighting:
    """Event-type weights from settings; no decay, no BM25."""
    return Weighting(event_weights=dict(settings.event_weights))


def history(data: Dataset, mask: np.ndarray, weighting: Weighting) -> tuple[sp.csr_matrix, Sequences]:
    """What a model learns from and recommends after: the events in ``mask`` as a matrix and as sequences."""
    return confidence(data.inter, mask, weighting), sequences(data.inter, mask)


def fit_and_score(
    data: Dataset,
    mask: np.ndarray,
    targets: np.ndarray,
    family: str,
    params: dict[str, Any],
    seed: int,
    weighting: Weighting,
    k: int,
    *,
    early_stop: bool = False,
    report: StepFn = silent,
) -> tuple[Model, EvalResult]:
    """Fit on the events in ``mask`` and rank each evaluated user's target.

    ``early_stop``: families trained in epochs may stop on ``targets`` (only ever the validation items).
    """
    matrix, seqs = history(data, mask, weighting)
    model = make_model(family, params, seed)
    validation = Validation(data.split.users, targets) if early_stop else None
    model.fit(matrix, sequences=seqs, validation=validation, report=report)
    return model, evaluate(model, matrix, data.split.users, targets, k=k, sequences=seqs)


def score_test(data: Dataset, chosen: Model, weighting: Weighting, k: int) -> EvalResult:
    """The test item's ranks: the ``chosen`` model refitted on train + validation (for a sequential
    model: its training continued from the epoch validation chose), given that history."""
    split = data.split
    matrix, seqs = history(data, split.train_val, weighting)
    model = chosen.refitted(matrix, sequences=seqs)
    return evaluate(model, matrix, split.users, split.test_items, k=k, sequences=seqs)


def train(
    settings: Settings,
    config: TrainConfig,
    data: Dataset,
    step: StepFn = silent,
    fitted: tuple[Model, EvalResult] | None = None,
) -> Trained:
    """Evaluate ``config`` on the validation and test items of ``data``, then refit on all of it.

    Both refits (train + validation for the test item, then everything) go through
    :meth:`~recommender.modeling.models.Model.refitted`: the same parameters from scratch, or, for a
    sequential model, its training continued from the epoch that validation chose. ``fitted``: the
    validation fit, done already (by the search, with the same configuration and seed).
    """
    weighting = config.weighting or default_weighting(settings)
    seconds: dict[str, float] = {"read": data.read_seconds}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[name] = round(now - clock, 3)
        clock = now

    split, args = data.split, (config.seed, weighting, config.k)
    step(f"fitting {config.family} on train, scoring validation items of {len(split.users):,} users")
    chosen, val = fitted or fit_and_score(
        data, split.train, split.val_items, config.family, config.params, *args, early_stop=True, report=step
    )
    step("refitting on train+validation, scoring test items")
    test = score_test(data, chosen, weighting, config.k)
    lap("evaluate")
    step("popularity baseline")
    _, base_val = fit_and_score(data, split.train, split.val_items, "popular", {}, *args)
    _, base_test = fit_and_score(data, split.train_val, split.test_items, "popular", {}, *args)
    lap("baseline")
    step(f"refitting {config.family} on all {data.rows:,} events")
    matrix, seqs = history(data, np.ones(len(data.inter), dtype=bool), weighting)
    model = chosen.refitted(matrix, sequences=seqs, report=step)
    lap("refit")
    step("frequently bought together and repurchase intervals")
    found = baskets(data.inter)
    together_metrics = {
        f"{m}_at_{config.k}" if m.endswith("_hr") else m: v for m, v in evaluate_together(found, config.k).items()
    }
    categories = data.categories if data.categories is not None else np.full(len(data.inter.vocab.items), "")
    lap("together")
    content = None
    if settings.content_model and data.items:
        step("the content model for new items (and its new-items evaluation)")
        content = fit_content(data.items, seqs.lists(), config.k, config.seed)
        lap("content")
    content_metrics = content.metrics if content is not None else {}
    bundle = Bundle(
        model=model,
        vocab=data.inter.vocab,
        weighting=weighting,
        user_items=matrix,
        sequences=seqs if model.uses_order else None,
        info={
            "family": config.family,
            "params": model.params,
            "seed": config.seed,
            "snapshot_id": data.snapshot_id,
            "k": config.k,
            "repurchase_intervals": repurchase_intervals(data.inter, categories),
            "rank_calibration": rank_calibration(val.per_user["rank"].to_numpy()),
        },
        together=together(found.matrix, settings.similar_n),
        bought=last_purchases(data.inter),
        content=content,
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
        extra_metrics={**together_metrics, **content_metrics},
        curve=list(getattr(chosen, "history", [])),
    )
