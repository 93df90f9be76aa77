"""The arrangement stage of a request: candidate lists in, the items to show out, under the placement's rules.

Candidates are read lazily, once each: without rules (and without details) the first ``n`` available
items are taken and nothing else is touched; catalog attributes are read only when a rule needs them,
similar lists only for MMR.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from redis.asyncio import Redis

from recommender.online.guard import Guard
from recommender.online.keys import Keys, decode
from recommender.online.livestate import LiveState
from recommender.online.rules import Candidates, RuleSet, arrange, mmr_window
from recommender.online.versions import Item, List, Versions, VersionState

Lists = list[List]


def unscored(lst: List) -> List:
    """Fillers after a model's list carry no model score."""
    return lst[0], [0.0] * len(lst[0])


def entries(
    chosen: Iterable[tuple[str, float]], info: Mapping[str, Mapping[str, Any] | None], details: bool
) -> list[Item]:
    """The answer's items (with their catalog fields when ``details``)."""
    if not details:
        return [{"item_id": i, "score": s} for i, s in chosen]
    return [{"item_id": i, "score": s, **(info.get(i) or {})} for i, s in chosen]


def first_available(lists: Lists, n: int, excluded: AbstractSet[str], unavailable: Container[str]) -> list[Item]:
    """First ``n`` distinct items across ``lists`` in order, minus excluded and unavailable ones (no rules)."""
    out: list[Item] = []
    seen: set[str] = set()
    for ids, scores in lists:
        for item_id, score in zip(ids, scores, strict=True):
            if len(out) == n:
                return out
            if item_id in seen or item_id in excluded or item_id in unavailable:
                continue
            seen.add(item_id)
            out.append({"item_id": item_id, "score": score})
    return out


async def similar_lists(redis: Redis, keys: Keys, guard: Guard, version: str, ids: list[str]) -> dict[str, List]:
    """The published similar lists of ``ids`` (MMR's similarities)."""
    values = await guard(redis.mget([keys.similar(version, i) for i in ids])) if ids else []
    return {item: decode(value) for item, value in zip(ids, values, strict=True)}


async def arranged(
    versions: Versions,
    live: LiveState,
    state: VersionState,
    lists: Lists,
    rules: RuleSet,
    n: int,
    excluded: AbstractSet[str],
    details: bool,
) -> list[Item]:
    """The first ``n`` candidates under ``rules``, without what ``state`` must not show now."""
    blocked, plan = live.unavailable(state), rules.plan
    if plan.empty and not details:  # the fast path: the live catalog matters only through availability
        return first_available(lists, n, excluded, blocked)
    similar = None
    if rules.diversity.mmr_lambda is not None:
        window = [i for i, _ in islice(Candidates(lists), mmr_window(n))]
        similar = await similar_lists(versions.redis, versions.keys, versions.guard, state.version, window)
    now, memo = datetime.now(UTC), plan.verdicts((state.version, live.generation))
    needed = plan.needs_attributes or details
    for first in (True, False):  # once when the worker holds the details of what it reads, else again after reading
        missing: list[str] = []
        info = live.details(state, Noting(versions.cached_details(state), missing)) if needed else {}
        chosen = arrange(
            Candidates(lists),
            info,
            rules,
            n,
            now,
            unavailable=blocked,
            excluded=excluded,
            similar=similar,
            memo=memo,
            changes=live.changes,
        )
        shown = entries(chosen, info, details)
        if not missing or not first:
            break
        for item in missing:  # judged without their attributes: not to be remembered
            memo.pop(item, None)
        ids = {i for ids, _ in lists for i in ids}.union(plan.pinned_items)
        await versions.details(state, ids)
    return shown


class Noting(Mapping[str, Item | None]):
    """A worker's details cache, noting which items were asked for and are not in it (not read yet)."""

    __slots__ = ("cache", "missing")

    def __init__(self, cache: Mapping[str, Item | None], missing: list[str]) -> None:
        self.cache, self.missing = cache, missing

    def __getitem__(self, item_id: str) -> Item | None:
        return self.get(item_id)

    def get(self, item_id: str, default: Any = None) -> Item | None:
        """The item's published details (None: not in the catalog, or not read yet and noted)."""
        try:
            return self.cache[item_id]
        except KeyError:
            self.missing.append(item_id)
            return None

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache)

    def __len__(self) -> int:
        return len(self.cache)
