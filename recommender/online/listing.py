"""The arrangement stage of a request: candidate lists in, the items to show out, under the placement's rules.

Candidates are read lazily, once each: without rules (and without details) the first ``n`` available
items are taken and nothing else is touched; catalog attributes are read only when a rule needs them,
similar lists only for MMR.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from recommender.online.guard import Guard
from recommender.online.keys import Keys, decode
from recommender.online.livestate import LiveState
from recommender.online.rules import RuleSet, arrange, mmr_window
from recommender.online.versions import Item, List, Versions, VersionState

Lists = list[List]


def distinct(lists: Lists) -> Iterator[tuple[str, float]]:
    """The lists' items in order, each once (its first score), as they are asked for."""
    seen: set[str] = set()
    for ids, scores in lists:
        for item_id, score in zip(ids, scores, strict=True):
            if item_id not in seen:
                seen.add(item_id)
                yield item_id, score


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
    blocked = live.unavailable(state)
    if rules.empty and not details:  # the fast path: the live catalog matters only through availability
        return first_available(lists, n, excluded, blocked)
    candidates: Iterable[tuple[str, float]] = distinct(lists)  # read lazily by arrange
    info: Mapping[str, Mapping[str, Any] | None] = {}
    if rules.needs_attributes or details:
        ids = {i for ids, _ in lists for i in ids}.union(rules.pinned_items)
        info = live.details(state, await versions.details(state, ids))
    similar = None
    if rules.diversity.mmr_lambda is not None:
        candidates = list(candidates)
        window = [i for i, _ in candidates[: mmr_window(n)]]
        similar = await similar_lists(versions.redis, versions.keys, versions.guard, state.version, window)
    now, memo = datetime.now(UTC), rules.verdicts((state.version, live.generation))
    chosen = arrange(
        candidates,
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
    return entries(chosen, info, details)
