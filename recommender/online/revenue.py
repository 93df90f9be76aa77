"""Revenue-aware ranking: a placement's ``objective`` of ``revenue`` orders its personalized list by expected value.

Expected value = the probability that the user takes the item at its rank, times its price. The probability is
the model's own, measured at training on the validation item (:func:`recommender.modeling.calibration.
rank_calibration`: the share of validation users whose item sat at each rank, made non-increasing) and published
with the version. The ``sensitivity`` blends the two objectives, as AWS Personalize's objective sensitivity
does: the value is ``p(rank) x price ** exponent``, the exponent 0 (``none``: relevance alone), 0.25
(``low``), 0.5 (``medium``) or 1 (``high``: expected revenue). Only the first ``len(calibration)`` candidates
(the ranks calibrated) are re-ordered; an item without a price counts at the median price of those. The tail
after them keeps its order, its scores put below the head's on the same scale (a rule's boost multiplies both).
Only a ``user`` feed's personalized list is re-ordered (a placement of another feed with this objective is
refused), and a version published without a calibration (trained before it existed) is served by relevance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any, Literal

Sensitivity = Literal["none", "low", "medium", "high"]
EXPONENTS: dict[str, float] = {"none": 0.0, "low": 0.25, "medium": 0.5, "high": 1.0}
MAX_PRICE = 1e12
"""Prices above count as this (a value of 1e308 squared is no longer a number)."""


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
    known = [p for p in (_price(prices.get(i)) for i in head) if p is not None]
    fill = median(known) if known else 1.0
    value = [calibration[rank] * (_price(prices.get(item)) or fill) ** exponent for rank, item in enumerate(head)]
    order = sorted(range(depth), key=lambda k: (-value[k], k))
    floor = min(value)  # the tail below the head, on the same scale and still in its order (rules multiply scores)
    tail = [floor * depth / (depth + 1 + j) for j in range(len(ids) - depth)]
    return [head[k] for k in order] + list(ids[depth:]), [value[k] for k in order] + tail


def _price(value: Any) -> float | None:
    """A usable price: a positive finite number, at most :data:`MAX_PRICE` (None otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        return None
    return min(float(value), MAX_PRICE)
