"""Online experiments (champion/challenger): a deterministic user split and the per-variant report.

While ``{prefix}:challenger`` names a published version, the API serves it to the users whose
pseudonym falls in the first ``RECSYS_EXPERIMENT_SHARE`` of the hash space (the same users every
time, across workers and restarts) and production to everyone else. Every answer's
``recommendation_id`` starts with its model version; shop events that carry it are attributed to
that variant. The API counts served lists per variant in ``{prefix}:experiment:served``.

The report: per variant, the share of served lists that led to a click (a ``view`` carrying the
list's id) and to an add-to-cart, with Wilson 95% intervals, and a two-proportion z-test of the
challenger against production. Promoting the challenger stays a human decision (``promote_model``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

Z95 = 1.959964


def in_challenger(pseudonym: str, share: float) -> bool:
    """Whether a (hex) pseudonym is in the challenger's share: uniform and stable, an HMAC is a hash."""
    return int(pseudonym[:8], 16) / 2**32 < share


def new_recommendation_id(model_version: str | None) -> str:
    """``<model version>-<96 random bits>``: the id says which variant served the list."""
    return f"{model_version or 'none'}-{os.urandom(12).hex()}"


def variant_of(recommendation_id: str) -> str:
    """The model version a recommendation id was served by."""
    return recommendation_id.split("-", 1)[0]


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson 95% interval."""

    hits: int
    trials: int
    rate: float
    low: float
    high: float


def wilson(hits: int, trials: int) -> Rate:
    """Wilson score interval (sound for small counts and rates near 0)."""
    if trials == 0:
        return Rate(hits, 0, 0.0, 0.0, 1.0)
    p = hits / trials
    denom = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / denom
    return Rate(hits, trials, p, max(0.0, centre - half), min(1.0, centre + half))


def two_proportion_p(a: Rate, b: Rate) -> float:
    """Two-sided p-value of a z-test that two rates are equal."""
    if a.trials == 0 or b.trials == 0:
        return 1.0
    pooled = (a.hits + b.hits) / (a.trials + b.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    if se == 0:
        return 1.0
    z = (b.rate - a.rate) / se
    return math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class VariantResult:
    """One variant's outcome."""

    model_version: str
    served: int
    click_through: Rate
    add_to_cart: Rate


@dataclass(frozen=True)
class ExperimentReport:
    """Both variants and the tests of the challenger against production."""

    production: VariantResult
    challenger: VariantResult
    click_through_p: float
    add_to_cart_p: float

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def experiment_report(events: pa.Table, served: dict[str, int], production: str, challenger: str) -> ExperimentReport:
    """Rates per variant from events carrying ``recommendation_id`` and the served counts."""
    tagged = events.filter(pc.invert(pc.is_null(events.column("recommendation_id"))))
    frame = tagged.select(["recommendation_id", "event_type"]).to_pandas()
    frame["variant"] = frame["recommendation_id"].map(variant_of)

    def result(version: str) -> VariantResult:
        mine = frame[frame["variant"] == version]
        n = int(served.get(version, 0))
        clicks = mine.loc[mine["event_type"] == "view", "recommendation_id"].nunique()
        carts = mine.loc[mine["event_type"] == "add_to_cart", "recommendation_id"].nunique()
        return VariantResult(version, n, wilson(min(clicks, n), n), wilson(min(carts, n), n))

    a, b = result(production), result(challenger)
    return ExperimentReport(
        a, b, two_proportion_p(a.click_through, b.click_through), two_proportion_p(a.add_to_cart, b.add_to_cart)
    )
