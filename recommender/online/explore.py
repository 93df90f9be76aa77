"""Exploration: a share of a placement's slots for new items, chosen by Thompson sampling.

A placement's ``explore`` share (off by default) gives the last slot of every ``1 / share`` slots of a list
(10%: the 10th of 10; 20%: the 5th and the 10th) to an item the content model proposes: the
:data:`CANDIDATES` new items it ranks best for the user (by the attributes' appeal for an unknown user).
Among them each request draws, per item, a click rate from its posterior ``Beta(1 + clicks, 1 + shown -
clicks)`` and ranks by that draw times the item's content weight ``exp(score - best score)``: an item rarely
shown has a wide posterior and can outdraw one of a higher weight that was shown often and not clicked; one
shown often and never clicked sinks; one that is clicked keeps coming back. The counts are per model version
(``{prefix}:explore:{model_version}``, ``shown:{item}`` and ``clicked:{item}``): a retrain, which learned from
the clicks' events, starts them afresh. Rules' filters, availability and the request's exclusions apply to the
candidates as to every item; a pin keeps its position.

An API worker counts what it showed in exploration slots and remembers, per list, which items those were (a
set under the list's recommendation id for :data:`CLICK_WINDOW_SECONDS`). A click is a ``view`` posted to
``POST /v1/events`` with that recommendation id on one of those items, counted once per list and item (the
set's ``SREM`` answers 1 once): a replayed id, or an id of a list that did not explore the item, counts nothing.
The worker writes the counts and the sets in one pipeline a round of its upkeep (at most once, like experiment
exposures; a click that arrives before its list's set is written is not counted) and reads the counts of the
versions it explores with back every :data:`REFRESH_SECONDS`.
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
CLICK_WINDOW_SECONDS = 3_600
"""How long after a list was served a click on one of its explored items counts (a set per exploring list:
at 100 such answers a second, about 360k small keys)."""
IN_USE_SECONDS = 600.0
"""A model version no request explored with for this long is no longer read back (nor held)."""
T = TypeVar("T")


def slots(n: int, share: float) -> list[int]:
    """The exploration slots (0-based) of a list of ``n``: the last of every ``1 / share`` slots."""
    if share <= 0 or n <= 0:
        return []
    count = math.floor(share * n + 0.5)
    return sorted({min(n - 1, math.ceil((j + 1) / share - 1e-9) - 1) for j in range(count)})


def drawn(
    ids: Sequence[str],
    scores: Sequence[float],
    counts: Counts | Mapping[str, tuple[int, int]],
    rng: np.random.Generator,
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


class Counts:
    """Item -> (shown, clicked) of one model version: the stored counts with this worker's unwritten ones, looked
    up per item (a request reads its candidates only)."""

    def __init__(self, known: Mapping[str, tuple[int, int]], shown: Counter[str], clicked: Counter[str]) -> None:
        self.known, self.shown, self.clicked = known, shown, clicked

    def get(self, item: str, default: tuple[int, int] = (0, 0)) -> tuple[int, int]:
        s, c = self.known.get(item, default)
        return s + self.shown[item], c + self.clicked[item]


class Exploration:
    """One worker's exploration counts: what it showed and saw clicked since its last flush, the lists whose
    exploration slots may still be clicked, and every worker's counts as last read from Redis."""

    def __init__(self) -> None:
        self.shown: dict[str, Counter[str]] = {}
        self.clicked: dict[str, Counter[str]] = {}
        self.lists: dict[str, list[str]] = {}
        """recommendation id -> the items its exploration slots showed, until the next flush writes them."""
        self.known: dict[str, dict[str, tuple[int, int]]] = {}
        self.read_at: dict[str, float] = {}
        self.used_at: dict[str, float] = {}

    def counts(self, model_version: str) -> Counts:
        """Item -> (shown, clicked) for ``model_version``."""
        return Counts(
            self.known.get(model_version, {}),
            self.shown.get(model_version, Counter()),
            self.clicked.get(model_version, Counter()),
        )

    def show(self, model_version: str, recommendation_id: str, items: Sequence[str]) -> None:
        """Count ``items`` shown in the exploration slots of the list ``recommendation_id``."""
        if not items:
            return
        self.shown.setdefault(model_version, Counter()).update(items)
        self.lists[recommendation_id] = list(items)

    def click(self, model_version: str, item: str) -> None:
        """Count a click on an item a list showed in an exploration slot (once per list and item)."""
        self.clicked.setdefault(model_version, Counter())[item] += 1

    def due(self, now: float | None = None) -> list[str]:
        """The model versions served in the last :data:`IN_USE_SECONDS` whose stored counts are older than
        :data:`REFRESH_SECONDS`; the others are forgotten."""
        now = time.monotonic() if now is None else now
        for version in [v for v, at in self.used_at.items() if now - at > IN_USE_SECONDS]:
            for held in (self.used_at, self.read_at, self.known):
                held.pop(version, None)
        return [v for v, at in self.read_at.items() if now - at >= REFRESH_SECONDS]

    def watch(self, model_version: str, now: float | None = None) -> None:
        """Read ``model_version``'s stored counts while requests explore with it (from the next upkeep round)."""
        self.used_at[model_version] = time.monotonic() if now is None else now
        self.read_at.setdefault(model_version, float("-inf"))

    async def flush(self, r: Any, keys: Keys) -> None:
        """Write the counts and the explored lists since the last flush, and read back every due version's counts
        (dropped on an error: at most once, see :class:`~recommender.online.experiments.Exposures`)."""
        shown, clicked, lists = self.shown, self.clicked, self.lists
        self.shown, self.clicked, self.lists = {}, {}, {}
        due = self.due()
        if not shown and not clicked and not lists and not due:
            return
        pipe = r.pipeline(transaction=False)
        for prefix, counted in (("shown", shown), ("clicked", clicked)):
            for version, counter in counted.items():
                for item, count in counter.items():
                    pipe.hincrby(keys.explore(version), f"{prefix}:{item}", count)
                pipe.expire(keys.explore(version), COUNTS_TTL_SECONDS)
        for recommendation_id, items in lists.items():
            pipe.sadd(keys.explored(recommendation_id), *items)
            pipe.expire(keys.explored(recommendation_id), CLICK_WINDOW_SECONDS)
        for version in due:
            pipe.hgetall(keys.explore(version))
        replies = await pipe.execute()
        now = time.monotonic()
        for version, stored in zip(due, replies[len(replies) - len(due) :], strict=True):
            self.known[version] = _parsed(stored)
            self.read_at[version] = now


def _parsed(stored: Mapping[Any, Any]) -> dict[str, tuple[int, int]]:
    shown: dict[str, int] = {}
    clicked: dict[str, int] = {}
    for field, value in stored.items():
        kind, _, item = (field.decode() if isinstance(field, bytes) else str(field)).partition(":")
        (shown if kind == "shown" else clicked)[item] = int(value)
    return {item: (shown.get(item, 0), clicked.get(item, 0)) for item in shown.keys() | clicked.keys()}
