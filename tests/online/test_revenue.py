"""Revenue-aware ranking: the calibration is the validation items' share per rank, never rising; the order is
p(rank) x price ** exponent over the calibrated head, the rest unchanged."""

from __future__ import annotations

import itertools

import numpy as np

from recommender.modeling.calibration import rank_calibration
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
    assert got == ["b", "a", "c", "d"] and values == [20.0, 4.0, 3.0, 1.0]  # d is past the calibrated ranks
    got, _ = by_value(ids, scores, calibration, prices, EXPONENTS["medium"])  # 0.4 x 10^.5 < 0.2 x 100^.5
    assert got == ["b", "a", "c", "d"]
    unpriced, values = by_value(ids, scores, calibration, {"a": None, "b": 100.0, "c": 30.0}, 1.0)
    assert unpriced == ["a", "b", "c", "d"] and values[0] == 0.4 * 65.0  # a at the median price of the head
