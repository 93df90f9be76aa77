"""Exploration: a share of a placement's slots for new or under-exposed items, chosen by Thompson sampling.

A placement's ``explore`` share (off by default) gives the last slot of every ``1 / share`` slots of a list
(10%: the 10th of 10; 20%: the 5th and the 10th) to an item the content model proposes: the
:data:`CANDIDATES` new items it ranks best for the user (by the attributes' appeal for an unknown user).
Among them each request draws, per item, a click rate from its posterior ``Beta(1 + clicks, 1 + shown -
clicks)`` and ranks by that draw times the item's content weight ``exp(score - best score)``: an item
rarely shown has a wide posterior and is tried now and then whatever its weight; one shown often and never
clicked sinks; one that is clicked keeps its slot until a retrain gives it a place of its own. Rules' filters,
availability and the request's exclusions apply to the candidates as to every item; a pin keeps its position.

The counts are per model version, in ``{prefix}:explore:{model_version}`` (``shown:{item}``,
``clicked:{item}``). An API worker counts what it showed in exploration slots, and the clicks: a ``view``
event posted with a recommendation id this API signed, on an item being explored. It writes both in one
pipeline a round of its upkeep (at most once, like experiment exposures) and reads every worker's counts back
every :data:`REFRESH_SECONDS`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from recommender.online.keys import Keys

CANDIDATES = 50
"""New items a request draws among (the content model's best for the user)."""
REFRESH_SECONDS = 2.0
COUNTS_TTL_SECONDS = 30 * 86_400
T = TypeVar("T")


def slots(n: int, share: float) -> list[int]:
    """The exploration slots (0-based) of a list of ``n``: the last of every ``1 / share`` slots."""
    if share <= 0 or n <= 0:
        return []
    count = math.floor(share * n + 0.5)
    return sorted({min(n - 1, math.ceil((j + 1) / share - 1e-9) - 1) for j in range(count)})


def drawn(
    ids: Sequence[str], scores: Sequence[float], counts: Mapping[str, tuple[int, int]], rng: np.random.Generator
) -> list[str]:
    """``ids`` in Thompson order: a click rate drawn from each one's ``Beta(1 + clicks, 1 + shown - clicks)``,
    times its content weight ``exp(score - best)``, highest first (``counts``: item -> (shown, clicked))."""
    if not ids:
        return []
    values = np.asarray(scores, dtype=np.float64)
    seen = np.array([counts.get(i, (0, 0)) for i in ids], dtype=np.float64).reshape(-1, 2)
    clicked = np.minimum(seen[:, 1], seen[:, 0])
    rate = rng.beta(1.0 + clicked, 1.0 + seen[:, 0] - clicked)
    order = np.argsort(-(rate * np.exp(values - values.max())), kind="stable")
    return [ids[k] for k in order]


def placed(items: Sequence[T], picks: Sequence[T], at: Sequence[int], fixed: Callable[[T], bool]) -> list[T]:
    """``items`` with ``picks`` at the slots ``at`` (the next free one where an item that is ``fixed``, a pin,
    holds it; the end of a shorter list): the fixed items keep their positions, the others move down."""
    pinned = {k for k, item in enumerate(items) if fixed(item)}
    position: dict[int, T] = {k: items[k] for k in pinned}
    for wanted, pick in zip(at, picks, strict=False):
        slot = wanted
        while slot in position:
            slot += 1
        position[slot] = pick
    free = (k for k in itertools.count() if k not in position)
    for k, item in enumerate(items):
        if k not in pinned:
            position[next(free)] = item
    return [position[k] for k in sorted(position)]


class Exploration:
    """One worker's exploration counts: what it showed and saw clicked since its last flush, and every worker's
    counts as last read from Redis."""

    def __init__(self) -> None:
        self.shown: dict[str, Counter[str]] = {}
        self.clicked: dict[str, Counter[str]] = {}
        self.known: dict[str, dict[str, tuple[int, int]]] = {}
        self.tried: dict[str, set[str]] = {}  # every item this worker showed, kept across flushes
        self.read_at: dict[str, float] = {}

    def counts(self, model_version: str) -> dict[str, tuple[int, int]]:
        """Item -> (shown, clicked) for ``model_version``: the stored counts with this worker's unwritten ones."""
        known = self.known.get(model_version, {})
        shown, clicked = self.shown.get(model_version, Counter()), self.clicked.get(model_version, Counter())
        if not shown and not clicked:
            return known
        out = dict(known)
        for item in shown.keys() | clicked.keys():
            s, c = out.get(item, (0, 0))
            out[item] = (s + shown[item], c + clicked[item])
        return out

    def show(self, model_version: str, items: Sequence[str]) -> None:
        """Count ``items`` shown in exploration slots."""
        self.shown.setdefault(model_version, Counter()).update(items)
        self.tried.setdefault(model_version, set()).update(items)

    def explored(self, model_version: str, item: str) -> bool:
        """Whether ``item`` is being explored under ``model_version`` (shown in a slot by any worker)."""
        return item in self.known.get(model_version, {}) or item in self.tried.get(model_version, ())

    def click(self, model_version: str, item: str) -> None:
        """Count a click on an explored item."""
        self.clicked.setdefault(model_version, Counter())[item] += 1

    def due(self, now: float | None = None) -> list[str]:
        """The model versions whose stored counts are older than :data:`REFRESH_SECONDS`."""
        now = time.monotonic() if now is None else now
        return [v for v, at in self.read_at.items() if now - at >= REFRESH_SECONDS]

    def watch(self, model_version: str) -> None:
        """Start reading ``model_version``'s stored counts (at the next upkeep round)."""
        self.read_at.setdefault(model_version, float("-inf"))

    async def flush(self, r: Any, keys: Keys) -> None:
        """Write the counts since the last flush and read back every due version's (dropped on an error: at most
        once, see :class:`~recommender.online.experiments.Exposures`)."""
        shown, clicked = self.shown, self.clicked
        self.shown, self.clicked = {}, {}
        due = self.due()
        if not shown and not clicked and not due:
            return
        pipe = r.pipeline(transaction=False)
        for prefix, counted in (("shown", shown), ("clicked", clicked)):
            for version, counter in counted.items():
                for item, count in counter.items():
                    pipe.hincrby(keys.explore(version), f"{prefix}:{item}", count)
                pipe.expire(keys.explore(version), COUNTS_TTL_SECONDS)
        for version in due:
            pipe.hgetall(keys.explore(version))
        replies = await pipe.execute()
        now = time.monotonic()
        for version, stored in zip(due, replies[len(replies) - len(due) :], strict=True):
            self.known[version] = _parsed(stored)
            self.read_at[version] = now


def _parsed(stored: Mapping[Any, Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for field, value in stored.items():
        kind, _, item = (field.decode() if isinstance(field, bytes) else str(field)).partition(":")
        out.setdefault(item, [0, 0])[0 if kind == "shown" else 1] = int(value)
    return {item: (s, c) for item, (s, c) in out.items()}
