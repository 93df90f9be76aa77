"""Ranking metrics for the leave-last-out protocol (one held-out item per user).

All items are ranked, already-seen items are filtered (the model's ``recommend`` does
that), and the held-out item's rank decides every metric. Beyond accuracy, the same
recommendations give catalog coverage and popularity bias (how much the lists lean on
popular items), and the per-user table feeds segment reports.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommender.modeling.matrix import Sequences
from recommender.modeling.models import Model

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


HISTORY_BUCKETS = (0, 5, 10, 20, np.inf)
"""Users by the number of distinct items in their history: 1-4, 5-9, 10-19, 20+."""


def head_threshold(popularity: np.ndarray, share: float = 0.2) -> float:
    """Interactions an item needs to be among the most popular ``share`` of the items that have any."""
    seen = popularity[popularity > 0]
    return float(np.quantile(seen, 1.0 - share)) if len(seen) else np.inf


def segments(per_user: pd.DataFrame, k: int) -> pd.DataFrame:
    """HR@k and NDCG@k per segment: history length buckets, and popular (head) vs long-tail targets."""
    hit = (per_user["rank"] >= 0) & (per_user["rank"] < k)
    ndcg = np.where(hit, 1.0 / np.log2(per_user["rank"].clip(lower=0) + 2.0), 0.0)
    frame = per_user.assign(hit=hit.astype(float), ndcg=ndcg)
    edges = list(HISTORY_BUCKETS)
    labels = [
        f"history_{int(lo)}+" if hi == np.inf else f"history_{int(lo)}-{int(hi) - 1}"
        for lo, hi in itertools.pairwise(edges)
    ]
    frame["history_bucket"] = pd.cut(frame["history"], bins=edges, right=False, labels=labels)
    frame["target_kind"] = np.where(frame["target_head"], "target_popular", "target_long_tail")
    rows = []
    for column in ("history_bucket", "target_kind"):
        for name, group in frame.groupby(column, observed=True):
            rows.append(
                {
                    "segment": str(name),
                    "users": len(group),
                    f"hr_at_{k}": group["hit"].mean(),
                    f"ndcg_at_{k}": group["ndcg"].mean(),
                }
            )
    return pd.DataFrame(rows)


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
    sequences: Sequences | None = None,
) -> EvalResult:
    """Score ``users`` given their history ``user_items`` (and ``sequences``) and rank their ``targets``."""
    depth = max(k, *ks)
    recommended, _ = model.recommend(users, user_items, depth, sequences=sequences)
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
            "target_head": popularity[targets] >= head_threshold(popularity),
        }
    )
    curve = {kk: accuracy_at(ranks, kk) for kk in sorted(set(ks) | {k})}
    return EvalResult(metrics=metrics, per_user=per_user, curve=curve)
