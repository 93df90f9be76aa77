"""The champion/challenger report: per user, over the experiment's own window, with scipy's statistics.

Users are what the split randomizes, so users are the unit: each arm's denominator is the users
the API served that arm during the experiment (its exposure set), and a user converts when they
clicked (a ``view`` carrying a recommendation id) or added to cart from a list of that arm at
least once. Both arms count only events since the experiment started, and only ids the API
signed (:class:`~recommender.online.experiments.RecommendationIds`); a forged or foreign id is ignored
and counted as such.

Intervals: Wilson 95% (``scipy.stats.binomtest(...).proportion_ci``). The difference: a
two-sided two-proportion test (Pearson's chi-square on the 2x2 table without continuity
correction, which is the pooled z-test), or Fisher's exact test when an expected cell is under 5.

New items per arm: the API counts the new items each arm showed (as ``new`` or in an exploration slot)
and which; a click on one is a ``view`` event carrying that arm's recommendation id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import binomtest, chi2_contingency, fisher_exact

from recommender.online.experiments import RecommendationIds

OUTCOMES = {"click_through": "view", "add_to_cart": "add_to_cart"}


@dataclass(frozen=True)
class Rate:
    """A per-user proportion with its Wilson 95% interval."""

    hits: int
    trials: int
    rate: float
    low: float
    high: float


def rate(hits: int, trials: int) -> Rate:
    """``hits`` of ``trials`` users, with scipy's Wilson interval (the whole [0, 1] for no users)."""
    if trials == 0:
        return Rate(hits, 0, 0.0, 0.0, 1.0)
    ci = binomtest(hits, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return Rate(hits, trials, hits / trials, float(ci.low), float(ci.high))


def difference_p(a: Rate, b: Rate) -> tuple[float, str]:
    """Two-sided p-value that two rates are equal, and the test used."""
    table = np.array([[a.hits, a.trials - a.hits], [b.hits, b.trials - b.hits]])
    if a.trials == 0 or b.trials == 0 or table.sum(axis=0).min() == 0:
        return 1.0, "none"
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if expected.min() < 5:
        return float(fisher_exact(table).pvalue), "fisher_exact"
    return float(chi2_contingency(table, correction=False).pvalue), "two_proportion_z"


@dataclass(frozen=True)
class NewItems:
    """How a variant showed its new items (``new`` and ``explore`` slots) and how often they were clicked."""

    impressions: int
    items: int
    """Distinct new items shown."""
    clicks: int
    """``view`` events from the variant's lists on those items, by its users, during the experiment."""
    click_rate: float
    """Clicks per impression (0 without impressions)."""


@dataclass(frozen=True)
class Arm:
    """One variant's users and outcomes."""

    model_version: str
    users: int
    served_lists: int
    click_through: Rate
    add_to_cart: Rate
    new_items: NewItems = field(default_factory=lambda: NewItems(0, 0, 0, 0.0))


@dataclass(frozen=True)
class ExperimentReport:
    """Both arms, the tests of the challenger against production, and what was ignored."""

    experiment_id: str
    started_at: str
    production: Arm
    challenger: Arm
    click_through_p: float
    add_to_cart_p: float
    tests: dict[str, str]
    """Which test gave each p-value (``two_proportion_z`` or ``fisher_exact``)."""
    ignored: dict[str, int] = field(default_factory=dict)
    placements: dict[str, dict[str, dict[str, Rate]]] = field(default_factory=dict)
    """placement -> model version -> outcome -> the share of the arm's users who converted from that placement
    (the placement is signed into each recommendation id)."""

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def experiment_report(
    events: pa.Table,
    exposed: dict[str, set[str]],
    served: dict[str, int],
    production: str,
    challenger: str,
    started_at: str,
    experiment_id: str,
    ids: RecommendationIds,
    new_served: Mapping[str, int] | None = None,
    new_shown: Mapping[str, set[str]] | None = None,
) -> ExperimentReport:
    """Per-user rates of both arms from ``events`` (user_id, recommendation_id, event_type, timestamp, and item_id
    for the new items' clicks).

    ``exposed`` maps each arm's model version to the pseudonyms served it during the experiment; ``new_served``
    to how many new items it showed, ``new_shown`` to which.
    """
    since = datetime.fromisoformat(started_at)
    tagged = events.filter(pc.invert(pc.is_null(events.column("recommendation_id"))))
    columns = ["user_id", "recommendation_id", "event_type", "timestamp"]
    rows = tagged.select(columns + (["item_id"] if "item_id" in tagged.column_names else [])).to_pylist()
    shown_new = new_shown or {}
    new_clicks: dict[str, int] = {}
    converted: dict[tuple[str, str], set[str]] = {(v, o): set() for v in (production, challenger) for o in OUTCOMES}
    by_placement: dict[tuple[str, str, str], set[str]] = {}
    ignored = {"before_the_experiment": 0, "not_issued_by_this_api": 0, "other_variant_or_user": 0}
    for row in rows:
        if row["timestamp"] < since:
            ignored["before_the_experiment"] += 1
            continue
        issued = ids.verify(row["recommendation_id"])
        if issued is None:
            ignored["not_issued_by_this_api"] += 1
            continue
        version = issued.model_version
        if version not in exposed or row["user_id"] not in exposed[version]:
            ignored["other_variant_or_user"] += 1
            continue
        for outcome, event_type in OUTCOMES.items():
            if row["event_type"] == event_type:
                converted[(version, outcome)].add(row["user_id"])
                by_placement.setdefault((issued.placement, version, outcome), set()).add(row["user_id"])
        if row["event_type"] == "view" and row.get("item_id") in shown_new.get(version, ()):
            new_clicks[version] = new_clicks.get(version, 0) + 1

    def arm(version: str) -> Arm:
        users = len(exposed.get(version, set()))
        rates = {o: rate(len(converted[(version, o)]), users) for o in OUTCOMES}
        shown, clicks = int((new_served or {}).get(version, 0)), new_clicks.get(version, 0)
        news = NewItems(shown, len(shown_new.get(version, ())), clicks, round(clicks / shown, 6) if shown else 0.0)
        return Arm(version, users, int(served.get(version, 0)), rates["click_through"], rates["add_to_cart"], news)

    a, b = arm(production), arm(challenger)
    click_p, click_test = difference_p(a.click_through, b.click_through)
    cart_p, cart_test = difference_p(a.add_to_cart, b.add_to_cart)
    tests = {"click_through": click_test, "add_to_cart": cart_test}
    placements = {
        placement: {
            v: {o: rate(len(by_placement.get((placement, v, o), set())), len(exposed.get(v, set()))) for o in OUTCOMES}
            for v in (production, challenger)
        }
        for placement in sorted({p for p, _, _ in by_placement})
    }
    return ExperimentReport(experiment_id, started_at, a, b, click_p, cart_p, tests, ignored, placements)
