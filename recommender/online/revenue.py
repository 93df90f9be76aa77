"""Revenue-aware ranking: a placement's ``objective`` of ``revenue`` orders its personalized list by expected value.

Expected value = the probability that the user takes the item at its rank, times its price. The probability is
the model's own, measured at training on the validation item (:func:`recommender.modeling.calibration.
rank_calibration`: the share of validation users whose item sat at each rank, made non-increasing) and published
with the version. The ``sensitivity`` blends the two objectives, as AWS Personalize's objective sensitivity
does: the value is ``p(rank) x price ** exponent``, the exponent 0 (``none``: relevance alone), 0.25
(``low``), 0.5 (``medium``) or 1 (``high``: expected revenue). Only the first ``len(calibration)`` candidates
(the ranks calibrated) are re-ordered; an item without a price counts at the median price of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any, Literal

Sensitivity = Literal["none", "low", "medium", "high"]
EXPONENTS: dict[str, float] = {"none": 0.0, "low": 0.25, "medium": 0.5, "high": 1.0}


def by_value(
    ids: Sequence[str],
    scores: Sequence[float],
    calibration: Sequence[float],
    prices: Mapping[str, Any],
    exponent: float,
) -> tuple[list[str], list[float]]:
    """``ids`` with the calibrated head ordered by ``calibration[rank] x price ** exponent``, highest first (ties
    keep their rank), those values as its scores; the rest after it, unchanged."""
    depth = min(len(ids), len(calibration))
    if depth == 0 or exponent == 0:
        return list(ids), list(scores)
    head = ids[:depth]
    known = [float(p) for p in (prices.get(i) for i in head) if isinstance(p, int | float) and p > 0]
    fill = median(known) if known else 1.0
    value = []
    for rank, item in enumerate(head):
        price = prices.get(item)
        price = float(price) if isinstance(price, int | float) and price > 0 else fill
        value.append(calibration[rank] * price**exponent)
    order = sorted(range(depth), key=lambda k: (-value[k], k))
    return [head[k] for k in order] + list(ids[depth:]), [value[k] for k in order] + list(scores[depth:])
