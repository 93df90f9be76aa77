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

Revenue per arm: every purchase (``price`` x ``quantity``, one where the quantity is missing) an arm's users made
since the experiment started, whether or not it carries a recommendation id: the split randomizes users, so the
difference of the arms' revenue per user is the challenger's effect on what its users spend. Users served both
arms (the share changed meanwhile) are left out of both, for every measure, and counted in ``ignored``. Its 95%
interval is ``scipy.stats.bootstrap`` over users (BCa up to :data:`BCA_MAX_USERS` users, whose jackknife is quadratic in
them; percentile above). Purchases carrying an arm's recommendation id are its ``attributed`` revenue too.

New items per arm: the API counts the new items each arm showed (as ``new`` or in an exploration slot)
and which; a click on one is a ``view`` event carrying that arm's recommendation id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import binomtest, bootstrap, chi2_contingency, fisher_exact

from recommender.online.experiments import RecommendationIds

OUTCOMES = {"click_through": "view", "add_to_cart": "add_to_cart"}
BCA_MAX_USERS = 20_000
"""Above this many users in both arms together, the revenue interval is the percentile bootstrap's."""
RESAMPLES = 2_000


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
class Revenue:
    """What an arm's users spent during the experiment."""

    total: float
    per_user: float
    """``total`` over the arm's users (those who bought nothing count as 0)."""
    buyers: int
    attributed: float
    """The part from purchases that carry a recommendation id of the arm."""
    unpriced: int
    """Purchases without a price (counted as 0)."""


@dataclass(frozen=True)
class Lift:
    """The challenger's revenue per user minus production's, with its bootstrap 95% interval (None: too few users
    or no spread to resample)."""

    difference: float
    low: float | None
    high: float | None
    method: str


def revenue_lift(production: np.ndarray, challenger: np.ndarray, seed: int = 0) -> Lift:
    """``mean(challenger) - mean(production)`` of per-user revenue, with ``scipy.stats.bootstrap``'s interval."""
    difference = float(challenger.mean() - production.mean()) if len(production) and len(challenger) else 0.0
    if min(len(production), len(challenger)) < 2 or (np.ptp(production) == 0 and np.ptp(challenger) == 0):
        return Lift(round(difference, 6), None, None, "none")
    method: Literal["BCa", "percentile"] = "BCa" if len(production) + len(challenger) <= BCA_MAX_USERS else "percentile"
    result = bootstrap(
        (challenger, production),
        lambda b, a, axis=-1: b.mean(axis=axis) - a.mean(axis=axis),
        n_resamples=RESAMPLES,
        batch=max(1, 50_000_000 // (len(production) + len(challenger))),  # bounds the resamples held at once
        method=method,
        rng=np.random.default_rng(seed),
    )
    low, high = (float(x) for x in (result.confidence_interval.low, result.confidence_interval.high))
    if not (np.isfinite(low) and np.isfinite(high)):  # a degenerate resample (BCa on nearly constant data)
        return Lift(round(difference, 6), None, None, "none")
    return Lift(round(difference, 6), round(low, 6), round(high, 6), method)


@dataclass(frozen=True)
class Arm:
    """One variant's users and outcomes."""

    model_version: str
    users: int
    served_lists: int
    click_through: Rate
    add_to_cart: Rate
    new_items: NewItems = field(default_factory=lambda: NewItems(0, 0, 0, 0.0))
    revenue: Revenue = field(default_factory=lambda: Revenue(0.0, 0.0, 0, 0.0, 0))


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
    revenue_per_user_lift: Lift = field(default_factory=lambda: Lift(0.0, None, None, "none"))
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
    both = exposed.get(production, set()) & exposed.get(challenger, set())  # a changed share served them both
    exposed = {v: users - both for v, users in exposed.items()} if both else exposed
    tagged = events.filter(pc.invert(pc.is_null(events.column("recommendation_id"))))
    columns = ["user_id", "recommendation_id", "event_type", "timestamp"]
    extra = [c for c in ("item_id", "price", "quantity") if c in tagged.column_names]
    rows = tagged.select(columns + extra).to_pylist()
    attributed: dict[str, float] = {}
    shown_new = new_shown or {}
    new_clicks: dict[str, int] = {}
    converted: dict[tuple[str, str], set[str]] = {(v, o): set() for v in (production, challenger) for o in OUTCOMES}
    by_placement: dict[tuple[str, str, str], set[str]] = {}
    ignored = {"before_the_experiment": 0, "not_issued_by_this_api": 0, "other_variant_or_user": 0}
    ignored["users_served_both"] = len(both)
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
        if row["event_type"] == "purchase":
            attributed[version] = attributed.get(version, 0.0) + (row.get("price") or 0.0) * (row.get("quantity") or 1)
    spent, unpriced = _spent(events, since)
    per_user = {v: np.array([spent.get(u, 0.0) for u in sorted(exposed.get(v, ()))]) for v in (production, challenger)}

    def arm(version: str) -> Arm:
        users = len(exposed.get(version, set()))
        rates = {o: rate(len(converted[(version, o)]), users) for o in OUTCOMES}
        shown, clicks = int((new_served or {}).get(version, 0)), new_clicks.get(version, 0)
        news = NewItems(shown, len(shown_new.get(version, ())), clicks, round(clicks / shown, 6) if shown else 0.0)
        values = per_user[version]
        money = Revenue(
            round(float(values.sum()), 6),
            round(float(values.mean()), 6) if users else 0.0,
            int((values > 0).sum()),
            round(attributed.get(version, 0.0), 6),
            sum(unpriced.get(u, 0) for u in exposed.get(version, ())),
        )
        counts = (version, users, int(served.get(version, 0)))
        return Arm(*counts, rates["click_through"], rates["add_to_cart"], news, money)

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
    lift = revenue_lift(per_user[production], per_user[challenger])
    return ExperimentReport(experiment_id, started_at, a, b, click_p, cart_p, tests, lift, ignored, placements)


def _spent(events: pa.Table, since: datetime) -> tuple[dict[str, float], dict[str, int]]:
    """Each user's purchases since ``since`` (price x quantity, one without a quantity) and their unpriced ones."""
    if not {"price", "quantity"} <= set(events.column_names):
        return {}, {}
    kept = pc.and_(
        pc.equal(events.column("event_type"), "purchase"), pc.greater_equal(events.column("timestamp"), since)
    )
    bought = events.filter(kept)
    price = pc.cast(bought.column("price"), pa.float64())
    value = pc.multiply(pc.fill_null(price, 0.0), pc.fill_null(pc.cast(bought.column("quantity"), pa.float64()), 1.0))
    totals = (
        pa.table(
            {"user_id": bought.column("user_id"), "value": value, "unpriced": pc.cast(pc.is_null(price), pa.int64())}
        )
        .group_by("user_id")
        .aggregate([("value", "sum"), ("unpriced", "sum")])
        .to_pydict()
    )
    users = totals["user_id"]
    return dict(zip(users, totals["value_sum"], strict=True)), dict(zip(users, totals["unpriced_sum"], strict=True))
