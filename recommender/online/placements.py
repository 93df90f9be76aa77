"""Placements: the places on the shop's pages that show a list, and what feeds each.

One config (``RECSYS_PLACEMENTS_FILE``, JSON; the defaults below without one) names every
placement with the list that feeds it, how many items it shows and its default rules:

* ``user``: the user's precomputed list, blended with their session (``home``);
* ``similar``: items similar to ``item_id``, re-ranked towards the user's own list when known (``product``);
* ``together``: frequently bought together with the ``cart`` items, from co-purchase counts of
  the training data (the similar-items lists for items without any) (``cart``);
* ``buy_again``: items the user bought whose category is typically bought again after an interval
  that has now passed, most overdue first (``buy_again``);
* ``recent``: the items of the user's session, newest first (``recently_viewed``);
* ``new``: items with no or few interactions, ranked for the user by the content model (``new``).

Rules stored with ``PUT /v1/rules/{placement}`` replace the config's rules of that placement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recommender.online.revenue import Sensitivity
from recommender.online.rules import RuleSet
from recommender.online.session import RRF_K

PLACEMENT_NAME = r"^[a-z][a-z0-9_]{0,31}$"
Feed = Literal["user", "similar", "together", "buy_again", "recent", "new"]
USER_FEEDS: frozenset[str] = frozenset({"user", "buy_again", "recent", "new"})
"""The feeds that rank for a user alone (the others need the page's item or the cart)."""


class Placement(BaseModel):
    """One placement's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feed: Feed
    n: int = Field(default=10, ge=1, le=1000, description="Items shown when a request does not say.")
    rules: RuleSet = Field(default_factory=RuleSet)
    personalize: float = Field(default=0.5, ge=0, le=10, description="Weight of the user's own list (similar feed).")
    explore: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="Share of the slots for new items, by Thompson sampling (0: off).",
    )
    objective: Literal["relevance", "revenue"] = Field(
        default="relevance",
        description="revenue: the personalized list ordered by expected value (p(rank) x price), see sensitivity.",
    )
    sensitivity: Sensitivity = Field(
        default="medium", description="How far revenue weighs: none, low, medium or high (price ** 0, .25, .5, 1)."
    )

    @model_validator(mode="after")
    def _revenue_ranks_a_user_list(self) -> Placement:
        if self.objective == "revenue" and self.feed != "user":
            raise ValueError(f"objective revenue orders a user's personalized list: feed user, not {self.feed!r}")
        return self


DEFAULT_PLACEMENTS: dict[str, Placement] = {
    "home": Placement(feed="user"),
    "product": Placement(feed="similar", n=8),
    "cart": Placement(feed="together", n=6),
    "buy_again": Placement(feed="buy_again", n=6),
    "recently_viewed": Placement(feed="recent", n=5),
    "new": Placement(feed="new", n=8),
}


class PlacementsConfig(BaseModel):
    """The placements file: ``{"placements": {"home": {"feed": "user", "n": 12, "rules": {...}}, ...}}``."""

    model_config = ConfigDict(extra="forbid")

    placements: dict[str, Placement]


def load_placements(path: Path | None) -> dict[str, Placement]:
    """The placements of ``path`` (the defaults for None); raises ValueError saying what is wrong."""
    if path is None:
        return dict(DEFAULT_PLACEMENTS)
    try:
        config = PlacementsConfig.model_validate(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"RECSYS_PLACEMENTS_FILE {path}: {exc}") from exc
    bad = [name for name in config.placements if not re.fullmatch(PLACEMENT_NAME, name)]
    if bad:
        raise ValueError(f"RECSYS_PLACEMENTS_FILE {path}: placement names {bad} must match {PLACEMENT_NAME}")
    return config.placements


def personalized(
    similar: tuple[list[str], list[float]], user: tuple[list[str], list[float]], weight: float
) -> tuple[list[str], list[float]]:
    """``similar`` items re-ranked by reciprocal-rank fusion with the user's list (only similar items stay)."""
    if not user[0] or weight == 0:
        return similar
    rank = {item: r for r, item in enumerate(user[0])}
    fused = {
        item: 1 / (RRF_K + r) + (weight / (RRF_K + rank[item]) if item in rank else 0.0)
        for r, item in enumerate(similar[0])
    }
    ranked = sorted(fused.items(), key=lambda kv: -kv[1])
    return [i for i, _ in ranked], [round(s, 6) for _, s in ranked]


def due_again(
    bought: tuple[list[str], list[float]],
    category_of: Callable[[str], str | None],
    intervals: Mapping[str, float],
    now: float,
) -> tuple[list[str], list[float]]:
    """Bought items whose category's repurchase interval has passed, most overdue first (score: elapsed / interval)."""
    due = []
    for item, at in zip(*bought, strict=True):
        interval = intervals.get(category_of(item) or "")
        if interval and now - at >= interval:
            due.append((item, round((now - at) / interval, 6)))
    due.sort(key=lambda pair: -pair[1])
    return [i for i, _ in due], [s for _, s in due]
