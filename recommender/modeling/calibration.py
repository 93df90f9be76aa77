"""The probability that a user takes the item a model ranks at each position, from the validation item."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

DEPTH = 50
"""Ranks calibrated (the evaluation's deepest cut-off)."""


def rank_calibration(ranks: np.ndarray, depth: int = DEPTH) -> list[float]:
    """P(the validation item sits at rank r), r = 0 .. depth - 1, for users whose item sat at ``ranks`` (0-based,
    -1 beyond the list): the share of the users at each rank, made non-increasing by scikit-learn's isotonic
    regression (a lower rank is never likelier than a higher one)."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return []
    counts = np.bincount(ranks[(ranks >= 0) & (ranks < depth)], minlength=depth)[:depth]
    fitted = IsotonicRegression(increasing=False, y_min=0.0).fit_transform(np.arange(depth), counts / len(ranks))
    return [round(float(p), 8) for p in fitted]
