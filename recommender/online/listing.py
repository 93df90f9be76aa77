"""The arrangement stage of a request: candidate lists in, the items to show out, under the placement's rules.

Candidates are read lazily, once each: without rules (and without details) the first ``n`` available
items are taken and nothing else is touched; catalog attributes are read only when a rule needs them,
similar lists only for MMR.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from redis.asyncio import Redis

from recommender.data.reasons import Kind, Reason
from recommender.online.guard import Guard
from recommender.online.keys import Behind, Keys, decode
from recommender.online.livestate import LiveState
from recommender.online.rules import Candidates, RuleSet, arrange, mmr_window
from recommender.online.versions import Item, List, Versions, VersionState

Lists = list[List]


@dataclass(frozen=True, slots=True)
class Why:
    """Why the items of one candidate list are in it: ``kind``, and the item behind them (one ``item_id`` for the
    whole list, or ``behind`` per position and item); items of ``new`` joined the list as new items."""

    kind: Kind
    item_id: str | None = None
    behind: Callable[[int, str], Reason | None] | None = None
    """The reason of the item at position ``k`` (None: the kind alone)."""
    new: AbstractSet[str] = frozenset()
    stored: Behind | None = None
    """The past items publishing stored with the list (the hot route's case, read without a call)."""

    def of(self, k: int, item: str) -> Reason:
        """The reason of the list's item ``item`` at position ``k``."""
        if self.stored is not None:
            viewed, because = self.stored
            at = because[k] if k < len(because) else -1
            return {"kind": self.kind, "item_id": viewed[at]} if at >= 0 else {"kind": self.kind}
        if self.new and item in self.new:
            return {"kind": "new"}
        if self.behind is None:
            return {"kind": self.kind, "item_id": self.item_id} if self.item_id else {"kind": self.kind}
        return self.behind(k, item) or {"kind": self.kind}


POPULAR = Why("popular")
POPULAR_REASON: Reason = {"kind": "popular"}


def unscored(lst: List) -> List:
    """Fillers after a model's list carry no model score."""
    return lst[0], [0.0] * len(lst[0])


def entries(
    chosen: Iterable[tuple[str, float]],
    info: Mapping[str, Mapping[str, Any] | None],
    details: bool,
    reasons: Mapping[str, Reason] | None = None,
) -> list[Item]:
    """The answer's items, with their ``reason`` when ``reasons`` is given (``popular`` where none is known) and
    their catalog fields when ``details`` (an attribute named like one of those never hides it)."""
    out: list[Item] = []
    for i, s in chosen:
        item: Item = {**(info.get(i) or {}), "item_id": i, "score": s} if details else {"item_id": i, "score": s}
        if reasons is not None:
            item["reason"] = reasons.get(i) or POPULAR_REASON
        out.append(item)
    return out


def reasons_of(items: Iterable[str], lists: Lists, whys: Sequence[Why], marks: Mapping[str, str]) -> dict[str, Reason]:
    """Each item's reason: a rule's mark, else the first list that holds it says why it is in it."""
    out: dict[str, Reason] = {}
    wanted = set()
    for item in items:
        if item in marks:
            out[item] = {"kind": marks[item]}
        else:
            wanted.add(item)
    for (ids, _), why in zip(lists, whys, strict=True):
        if not wanted:
            break
        for k, item in enumerate(ids):
            if item in wanted:
                wanted.discard(item)
                out[item] = why.of(k, item)
    return out


def first_available(
    lists: Lists, n: int, excluded: AbstractSet[str], unavailable: Container[str], whys: Sequence[Why] | None
) -> list[Item]:
    """First ``n`` distinct items across ``lists`` in order, minus excluded and unavailable ones (no rules), each
    with the reason its list gives (none without ``whys``)."""
    out: list[Item] = []
    seen: set[str] = set()
    for index, (ids, scores) in enumerate(lists):
        why = whys[index] if whys is not None else None
        for k, (item_id, score) in enumerate(zip(ids, scores, strict=True)):
            if len(out) == n:
                return out
            if item_id in seen or item_id in excluded or item_id in unavailable:
                continue
            seen.add(item_id)
            if why is None:
                out.append({"item_id": item_id, "score": score})
            else:
                out.append({"item_id": item_id, "score": score, "reason": why.of(k, item_id)})
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
    whys: Sequence[Why] | None,
) -> list[Item]:
    """The first ``n`` candidates under ``rules``, without what ``state`` must not show now, each with its reason
    (``whys``: one per list; None: no reasons)."""
    blocked, plan = live.unavailable(state), rules.plan
    if plan.empty and not details:  # the fast path: the live catalog matters only through availability
        return first_available(lists, n, excluded, blocked, whys)
    similar = None
    if rules.diversity.mmr_lambda is not None:
        window = [i for i, _ in islice(Candidates(lists), mmr_window(n))]
        similar = await similar_lists(versions.redis, versions.keys, versions.guard, state.version, window)
    now, memo = datetime.now(UTC), plan.verdicts((state.version, live.generation))
    needed = plan.needs_attributes or details
    for first in (True, False):  # once when the worker holds the details of what it reads, else again after reading
        missing: list[str] = []
        marks: dict[str, str] = {}
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
            marks=marks,
        )
        reasons = None if whys is None else reasons_of((i for i, _ in chosen), lists, whys, marks)
        shown = entries(chosen, info, details, reasons)
        if not missing or not first:
            break
        for item in missing:  # judged without their attributes: not to be remembered
            memo.pop(item, None)
        ids = {i for ids, _ in lists for i in ids}.union(plan.pinned_items)
        await versions.details(state, ids)
    if details and whys is not None:
        await titled(versions, live, state, shown)
    return shown


async def titled(versions: Versions, live: LiveState, state: VersionState, shown: list[Item]) -> None:
    """Give each reason that names an item that item's title too (what "Because you viewed ..." shows)."""
    behind = {r["item_id"] for r in (i["reason"] for i in shown) if "item_id" in r}
    if not behind:
        return
    info = live.details(state, await versions.details(state, behind))
    for item in shown:
        reason = item["reason"]
        title = (info.get(reason.get("item_id", "")) or {}).get("title")
        if title:
            item["reason"] = {**reason, "title": title}


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
