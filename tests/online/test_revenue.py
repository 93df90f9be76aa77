"""Revenue-aware ranking: the calibration is the validation items' share per rank, never rising; the order is
p(rank) x price ** exponent over the calibrated head, the rest unchanged."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from recommender.modeling.calibration import rank_calibration
from recommender.online.placements import Placement
from recommender.online.revenue import EXPONENTS, by_value


def test_the_calibration_is_the_share_of_users_per_rank_made_non_increasing() -> None:
    ranks = np.array([0] * 30 + [1] * 10 + [2] * 12 + [3] * 2 + [-1] * 46)  # 100 users, rank 2 above rank 1
    p = rank_calibration(ranks, depth=5)
    assert p[0] == 0.3 and p[1] == p[2] == 0.11 and p[3] == 0.02 and p[4] == 0.0  # 1 and 2 pooled
    assert all(a >= b for a, b in itertools.pairwise(p)) and rank_calibration(np.array([])) == []


def test_the_head_is_ordered_by_expected_value_and_the_rest_kept() -> None:
    ids, scores = ["a", "b", "c", "d"], [4.0, 3.0, 2.0, 1.0]
    calibration = [0.4, 0.2, 0.1]
    prices = {"a": 10.0, "b": 100.0, "c": 30.0, "d": 1_000.0}
    assert by_value(ids, scores, calibration, prices, EXPONENTS["none"]) == (ids, scores)  # relevance alone
    got, values = by_value(ids, scores, calibration, prices, EXPONENTS["high"])
    assert got == ["b", "a", "c", "d"] and values == [20.0, 4.0, 3.0, 3.0 * 3 / 4]  # d: past the head, below it
    got, _ = by_value(ids, scores, calibration, prices, EXPONENTS["medium"])  # 0.4 x 10^.5 < 0.2 x 100^.5
    assert got == ["b", "a", "c", "d"]
    unpriced, values = by_value(ids, scores, calibration, {"a": None, "b": 100.0, "c": 30.0}, 1.0)
    assert unpriced == ["a", "b", "c", "d"] and values[0] == 0.4 * 65.0  # a at the median price of the head


def test_the_tail_stays_below_the_head_in_order_and_prices_are_bounded() -> None:
    ids, scores = ["a", "b", "c", "d", "e"], [9.0, 8.0, 7.0, 6.0, 5.0]
    got, values = by_value(ids, scores, [0.5, 0.2], {"a": 1.0, "b": 1e308, "c": float("nan")}, 1.0)
    assert got[:2] == ["b", "a"] and got[2:] == ["c", "d", "e"]
    assert all(math.isfinite(v) for v in values) and values == sorted(values, reverse=True)
    assert max(values[2:]) < min(values[:2])  # a boost multiplies head and tail on one scale


def test_a_revenue_objective_needs_a_user_feed() -> None:
    assert Placement(feed="user", objective="revenue").sensitivity == "medium"
    with pytest.raises(ValidationError, match="feed user"):
        Placement(feed="similar", objective="revenue")
