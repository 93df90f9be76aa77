"""Ranking metrics for the leave-last-out protocol (one held-out item per user).

All items are ranked, already-seen items are filtered (the model's ``recommend`` does
that), and the held-out item's rank decides every metric. Beyond accuracy, the same
recommendations give catalog coverage and popularity bias (how much the lists lean on
popular items), and the per-user table feeds segment reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.models import Model

CURVE_KS = (1, 5, 10, 20, 50)


def target_ranks(recommended: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in their list, -1 when absent."""
    hits = recommended == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


def accuracy_at(ranks: np.ndarray, k: int) -> dict[str, float]:
    """HR, NDCG, MAP, precision and recall at ``k`` from target ranks (one relevant item per user)."""
    if len(ranks) == 0:
        return {f"{m}_at_{k}": 0.0 for m in ("hr", "ndcg", "map", "precision", "recall")}
    hit = (ranks >= 0) & (ranks < k)
    safe = np.where(hit, ranks, 0)
    hr = float(hit.mean())
    return {
        f"hr_at_{k}": hr,
        f"ndcg_at_{k}": float(np.where(hit, 1.0 / np.log2(safe + 2.0), 0.0).mean()),
        f"map_at_{k}": float(np.where(hit, 1.0 / (safe + 1.0), 0.0).mean()),
        f"precision_at_{k}": hr / k,
        f"recall_at_{k}": hr,
    }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a non-negative distribution (0 equal, 1 all on one)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.sum() == 0 or len(x) == 0:
        return 0.0
    n = len(x)
    return float((2.0 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def beyond_accuracy(recommended: np.ndarray, popularity: np.ndarray, k: int) -> dict[str, float]:
    """Catalog coverage, mean popularity percentile of recommended items, Gini of exposure."""
    top = recommended[:, :k]
    shown = top[top >= 0]
    n_items = len(popularity)
    exposure = np.bincount(shown, minlength=n_items)
    percentile = pd.Series(popularity).rank(pct=True).to_numpy()
    return {
        f"coverage_at_{k}": float((exposure > 0).sum() / max(n_items, 1)),
        f"popularity_percentile_at_{k}": float(percentile[shown].mean()) if len(shown) else 0.0,
        f"exposure_gini_at_{k}": gini(exposure),
    }


@dataclass(frozen=True)
class EvalResult:
    """Metrics (flat, comparable across runs) and the per-user detail behind them."""

    metrics: dict[str, float]
    per_user: pd.DataFrame
    """user row, target item, rank (-1: not in top max-k), history length, target popularity."""
    curve: dict[int, dict[str, float]]
    """Accuracy at each k of :data:`CURVE_KS`, for the plot."""


def evaluate(
    model: Model,
    user_items: sp.csr_matrix,
    users: np.ndarray,
    targets: np.ndarray,
    k: int = 10,
    ks: Sequence[int] = CURVE_KS,
) -> EvalResult:
    """Score ``users`` with ``model`` given their history ``user_items`` and rank their ``targets``."""
    depth = max(k, *ks)
    recommended, _ = model.recommend(users, user_items, depth)
    ranks = target_ranks(recommended, targets)
    popularity = np.asarray((user_items > 0).sum(axis=0)).ravel()
    metrics = {**accuracy_at(ranks, k), **beyond_accuracy(recommended, popularity, k), "users": float(len(users))}
    per_user = pd.DataFrame(
        {
            "user": users,
            "target": targets,
            "rank": ranks,
            "history": np.diff(user_items.indptr)[users],
            "target_popularity": popularity[targets],
        }
    )
    curve = {kk: accuracy_at(ranks, kk) for kk in sorted(set(ks) | {k})}
    return EvalResult(metrics=metrics, per_user=per_user, curve=curve)
