"""Merchandising rules: what a placement shows, arranged on top of the model's ranked candidates.

A placement's :class:`RuleSet` holds rules of five kinds and a diversity setting:

* ``filter``: keep only items whose attributes match every condition (``category in [...]``,
  ``price between [lo, hi]``, ``brand ne "acme"``, ...);
* ``boost`` / ``bury``: multiply the score of matching items by ``factor`` (> 1 / < 1), then re-rank;
* ``pin``: show ``item_id`` at ``position`` (1-based), optionally only between ``start`` and ``end``;
* ``promote``: fill ``share`` of the slots with the best candidates matching ``where`` (AWS
  Personalize's promotions), spread evenly down the list;
* ``diversity``: at most ``max_per_category`` items of one category in the list, and optionally
  maximal marginal relevance (``mmr_lambda``) on the model's item similarities.

Conflicts resolve in one documented order, each kind beating every later one: an item that is hidden,
out of stock or excluded is never shown; a pin is shown where it says (and counts in its category's
cap); filters; the category cap (over-cap items only fill a list that would otherwise be short);
promotions (a promoted item must pass the filters and the cap); boosts and buries reorder what is left;
MMR reorders by marginal relevance on the boosted scores. :func:`parse_rules` refuses an item or a
position pinned twice at overlapping times.

Pure functions over lists and dicts: the API runs them per request, the offline evaluation on
whole test sets.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime
from itertools import combinations, islice
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

Item = Mapping[str, Any]
Scored = tuple[str, float]
OPS = ("eq", "ne", "in", "not_in", "gte", "lte", "between")


class Condition(BaseModel):
    """One attribute test: ``field`` is a catalog attribute (category, price, title, in_stock, or any other)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, max_length=64)
    op: Literal["eq", "ne", "in", "not_in", "gte", "lte", "between"]
    value: Any

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        v = self.value
        if self.op in ("in", "not_in") and not (isinstance(v, list) and v and len(v) <= 1000):
            raise ValueError(f"{self.op} needs a list of 1 to 1000 values")
        if self.op in ("gte", "lte") and not _number(v):
            raise ValueError(f"{self.op} needs a number")
        if self.op == "between" and not (isinstance(v, list) and len(v) == 2 and all(map(_number, v)) and v[0] <= v[1]):
            raise ValueError("between needs [low, high] numbers with low <= high")
        if self.op in ("eq", "ne") and not isinstance(v, str | int | float | bool):
            raise ValueError(f"{self.op} needs a single value")
        return self

    def holds(self, item: Item) -> bool:
        """Whether ``item`` (its attributes) passes; a missing attribute passes only ``ne`` and ``not_in``."""
        value = item.get(self.field)
        if value is None:
            return self.op in ("ne", "not_in")
        if self.op in ("gte", "lte", "between") and not _number(value):
            return False
        return bool(_TESTS[self.op](value, self.value))


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda v, t: v == t,
    "ne": lambda v, t: v != t,
    "in": lambda v, t: v in t,
    "not_in": lambda v, t: v not in t,
    "gte": lambda v, t: v >= t,
    "lte": lambda v, t: v <= t,
    "between": lambda v, t: t[0] <= v <= t[1],
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


Where = Annotated[list[Condition], Field(min_length=1, max_length=20)]


def matches(where: Sequence[Condition], item: Item) -> bool:
    """Every condition holds."""
    return all(c.holds(item) for c in where)


class FilterRule(BaseModel):
    """Keep only the items that match."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["filter"]
    where: Where


class BoostRule(BaseModel):
    """Multiply matching items' scores by ``factor`` (> 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["boost"]
    where: Where
    factor: float = Field(gt=1, le=100)


class BuryRule(BaseModel):
    """Multiply matching items' scores by ``factor`` (between 0 and 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["bury"]
    where: Where
    factor: float = Field(gt=0, lt=1)


class PinRule(BaseModel):
    """Show ``item_id`` at ``position`` (1-based), between ``start`` and ``end`` when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["pin"]
    item_id: str = Field(min_length=1, max_length=256)
    position: int = Field(ge=1, le=1000)
    start: datetime | None = None
    end: datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> PinRule:
        for stamp in (self.start, self.end):
            if stamp is not None and stamp.tzinfo is None:
                raise ValueError("start and end need a time zone (e.g. 2026-12-24T00:00:00Z)")
        if self.start and self.end and self.start >= self.end:
            raise ValueError("start must be before end")
        return self

    def active(self, now: datetime) -> bool:
        """Whether the pin's window contains ``now``."""
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)

    def overlaps(self, other: PinRule) -> bool:
        """Whether the two pins' windows (start included, end excluded; open ends unbounded) share a moment."""
        starts_before_other_ends = self.start is None or other.end is None or self.start < other.end
        return starts_before_other_ends and (other.start is None or self.end is None or other.start < self.end)


class PromoteRule(BaseModel):
    """Fill ``share`` of the slots with the best candidates that match ``where``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["promote"]
    where: Where
    share: float = Field(gt=0, le=1)


Rule = Annotated[FilterRule | BoostRule | BuryRule | PinRule | PromoteRule, Field(discriminator="kind")]
RULE = TypeAdapter(Rule)


class Diversity(BaseModel):
    """At most ``max_per_category`` items of one category; MMR with ``mmr_lambda`` (1: relevance only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_per_category: int | None = Field(default=None, ge=1, le=1000)
    mmr_lambda: float | None = Field(default=None, ge=0, le=1)


class RuleSet(BaseModel):
    """What a placement applies to its candidates."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[Rule] = Field(default_factory=list, max_length=200)
    diversity: Diversity = Field(default_factory=Diversity)
    _memo: dict[Any, Any] = PrivateAttr(default_factory=dict)
    """What is derived from the rule set once: its plan (with its verdicts per version), its narrowed copies."""

    @property
    def plan(self) -> Plan:
        """What the rule set derives once (a rule set never changes): its rules by kind, its flags, its memo."""
        plan = self._memo.get("plan")
        if plan is None:
            plan = self._memo["plan"] = Plan(self)
        return plan

    @property
    def empty(self) -> bool:
        """Nothing to apply (the fast path)."""
        return self.plan.empty

    @property
    def pinned_items(self) -> tuple[str, ...]:
        """Items some pin names (active or not)."""
        return self.plan.pinned_items

    @property
    def needs_attributes(self) -> bool:
        """Whether applying it reads catalog attributes (pins and MMR alone do not)."""
        return self.plan.needs_attributes

    @property
    def filters(self) -> RuleSet:
        """This rule set's filters alone (made once): what an item placed outside the ranking must pass."""
        if "filters" not in self._memo:
            self._memo["filters"] = RuleSet(rules=[r for r in self.rules if isinstance(r, FilterRule)])
        return self._memo["filters"]

    def narrowed(self, category: str | None = None, max_per_category: int | None = None) -> RuleSet:
        """This rule set with a request's own filter on ``category`` and cap per category added (made once)."""
        if category is None and max_per_category is None:
            return self
        key = ("narrowed", category, max_per_category)
        if key not in self._memo:
            if len(self._memo) > NARROWED_MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = self._narrowed(category, max_per_category)
        return self._memo[key]

    def _narrowed(self, category: str | None, max_per_category: int | None) -> RuleSet:
        rules = list(self.rules)
        if category is not None:
            rules.append(FilterRule(kind="filter", where=[Condition(field="category", op="eq", value=category)]))
        diversity = self.diversity
        if max_per_category is not None:
            diversity = diversity.model_copy(update={"max_per_category": max_per_category})
        return RuleSet(rules=rules, diversity=diversity)


VERDICT_MEMO_SIZE = 200_000
VERDICT_SCOPES = 4
NARROWED_MEMO_SIZE = 1000
Verdict = tuple[bool, float, Any, tuple[bool, ...]]
"""An item under a rule set: whether it passes the filters, its score factor, its category, whether each
promotion's condition matches it."""


class Plan:
    """A rule set's rules by kind and what follows from them, derived once; and its memo of verdicts."""

    __slots__ = (
        "conditions",
        "empty",
        "highest",
        "lowest",
        "memos",
        "needs_attributes",
        "pinned_items",
        "pins",
        "promotes",
        "reorders",
        "reweights",
    )

    def __init__(self, rules: RuleSet) -> None:
        self.conditions = tuple(c for r in rules.rules if isinstance(r, FilterRule) for c in r.where)
        self.reweights = tuple(r for r in rules.rules if isinstance(r, BoostRule | BuryRule))
        self.promotes = tuple(r for r in rules.rules if isinstance(r, PromoteRule))
        self.pins = tuple(r for r in rules.rules if isinstance(r, PinRule))
        self.pinned_items = tuple(r.item_id for r in self.pins)
        plain = rules.diversity == Diversity()
        self.empty = not rules.rules and plain
        self.reorders = bool(self.promotes) or not plain
        """Whether it does more than filter, re-weight and pin (promotions, a cap, MMR)."""
        self.needs_attributes = rules.diversity.max_per_category is not None or len(self.pins) < len(rules.rules)
        self.highest = math.prod(r.factor for r in self.reweights if r.factor > 1)
        self.lowest = math.prod(r.factor for r in self.reweights if r.factor < 1)
        """The most a score can be multiplied by (boosts) and the least (buries)."""
        self.memos: dict[Any, dict[str, tuple[int, Verdict]]] = {}

    def verdicts(self, scope: Any) -> dict[str, tuple[int, Verdict]]:
        """The memo of per-item verdicts for ``scope`` (a published version and the live state's generation: the
        verdicts hold for that version's attributes and that copy's change counts). The last
        :data:`VERDICT_SCOPES` scopes are kept (champion and challenger alternate without re-judging)."""
        memo = self.memos.get(scope)
        if memo is None:
            while len(self.memos) >= VERDICT_SCOPES:
                del self.memos[next(iter(self.memos))]
            memo = self.memos[scope] = {}
        elif len(memo) > VERDICT_MEMO_SIZE:
            memo.clear()
        return memo

    def verdict(self, item: Item) -> Verdict:
        """What this plan makes of an item with these attributes."""
        passes = True
        for condition in self.conditions:
            if not condition.holds(item):
                passes = False
                break
        factor = 1.0
        for rule in self.reweights:
            if matches(rule.where, item):
                factor *= rule.factor
        return passes, factor, item.get("category"), tuple(matches(r.where, item) for r in self.promotes)


class Judge:
    """Verdicts for one request: from ``memo`` while an item has had no more live changes (``changes``), else new."""

    __slots__ = ("attributes", "changes", "memo", "plan")

    def __init__(
        self,
        plan: Plan,
        attributes: Mapping[str, Item | None],
        memo: MutableMapping[str, tuple[int, Verdict]] | None = None,
        changes: Mapping[str, int] | None = None,
    ) -> None:
        self.plan, self.attributes, self.memo, self.changes = plan, attributes, memo, changes

    def __call__(self, item: str) -> Verdict:
        memo, changes = self.memo, self.changes
        if memo is None or changes is None:
            return self.plan.verdict(self.attributes.get(item) or {})
        count = changes.get(item, 0)
        found = memo.get(item)
        if found is not None and found[0] == count:
            return found[1]
        verdict = self.plan.verdict(self.attributes.get(item) or {})
        memo[item] = (count, verdict)
        return verdict


class RulesError(ValueError):
    """A rule set that cannot be applied; ``errors`` has one entry per bad rule."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid rule(s)")
        self.errors = errors


def parse_rules(payload: Any) -> RuleSet:
    """Validate a rule set, reporting every bad rule with its index and reasons (:class:`RulesError`)."""
    if not isinstance(payload, dict):
        raise RulesError([{"rule": None, "reasons": ['a rule set is an object: {"rules": [...], "diversity": {...}}']}])
    errors: list[dict[str, Any]] = []
    unknown = sorted(set(payload) - {"rules", "diversity"})
    if unknown:
        errors.append({"rule": None, "reasons": [f"unknown field(s) {unknown}: a rule set has rules and diversity"]})
    raw = payload.get("rules", [])
    if not isinstance(raw, list):
        raise RulesError([*errors, {"rule": None, "reasons": ["rules must be a list"]}])
    rules = []
    for index, rule in enumerate(raw):
        try:
            rules.append(RULE.validate_python(rule))
        except ValidationError as exc:
            errors.append({"rule": index, "reasons": [_reason(e) for e in exc.errors()]})
    errors += _conflicting_pins([(k, r) for k, r in enumerate(rules) if isinstance(r, PinRule)])
    try:
        diversity = Diversity.model_validate(payload.get("diversity") or {})
    except ValidationError as exc:
        errors.append({"rule": "diversity", "reasons": [_reason(e) for e in exc.errors()]})
        diversity = Diversity()
    if errors:
        raise RulesError(errors)
    return RuleSet(rules=rules, diversity=diversity)


def _conflicting_pins(pins: list[tuple[int, PinRule]]) -> list[dict[str, Any]]:
    """An item pinned twice, or a position pinned twice, at times that overlap: either would be dropped."""
    errors = []
    for (a, one), (b, other) in combinations(pins, 2):
        if not one.overlaps(other):
            continue
        if one.item_id == other.item_id:
            errors.append(
                {"rule": b, "reasons": [f"{one.item_id} is pinned twice in overlapping windows (rules {a} and {b})"]}
            )
        if one.position == other.position:
            errors.append(
                {
                    "rule": b,
                    "reasons": [f"position {one.position} is pinned twice in overlapping windows (rules {a} and {b})"],
                }
            )
    return errors


def _reason(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class Candidates(Iterable[Scored]):
    """Candidate lists ``(ids, scores)``, best first: iterated, their items in order, each once (its first score).

    Unlike a plain iterable, it tells :func:`arrange` where each list starts and whether its scores never rise,
    so that re-weighting can pass over a sorted list's tail once none of it can be shown.
    """

    __slots__ = ("lists",)

    def __init__(self, lists: Sequence[tuple[Sequence[str], Sequence[float]]]) -> None:
        self.lists = lists

    def __iter__(self) -> Iterator[Scored]:
        seen: set[str] = set()
        for ids, scores in self.lists:
            for item_id, score in zip(ids, scores, strict=True):
                if item_id not in seen:
                    seen.add(item_id)
                    yield item_id, score

    def runs(self) -> Iterator[tuple[Sequence[str], Sequence[float], bool]]:
        """Each list with whether its scores never rise (checked: a sort of a sorted list is one pass)."""
        for ids, scores in self.lists:
            yield ids, scores, list(scores) == sorted(scores, reverse=True)


def arrange(
    candidates: Iterable[Scored],
    attributes: Mapping[str, Item | None],
    rules: RuleSet,
    n: int,
    now: datetime,
    *,
    unavailable: Container[str] = frozenset(),
    excluded: Container[str] = frozenset(),
    similar: Mapping[str, tuple[Sequence[str], Sequence[float]]] | None = None,
    memo: MutableMapping[str, tuple[int, Verdict]] | None = None,
    changes: Mapping[str, int] | None = None,
    marks: MutableMapping[str, str] | None = None,
) -> list[Scored]:
    """The first ``n`` items to show: ``candidates`` (best first) under the placement's ``rules``.

    ``attributes`` maps item ids to their catalog attributes; an item without any matches no
    condition but ``ne`` / ``not_in``. ``similar`` (for MMR) holds the candidates' similar-item
    lists. ``candidates`` is read lazily: with filters and pins alone, only until ``n`` items are found; as
    :class:`Candidates`, with boosts and buries alone, only until no later item of a sorted list can be shown.
    ``memo`` keeps each item's verdict under these rules between requests, valid while the item's count of
    live ``changes`` stays the same: a request then judges only what changed. ``marks`` receives
    ``pinned`` or ``promoted`` for the items a pin or a promotion placed.
    """
    marks = {} if marks is None else marks
    available: Iterator[Scored] = (p for p in candidates if p[0] not in unavailable and p[0] not in excluded)
    plan = rules.plan
    if plan.empty:
        return list(islice(available, n))
    judge = Judge(plan, attributes, memo, changes)
    pins = active_pins(rules, now, unavailable, excluded)
    scores: dict[str, float] = {}
    if plan.reweights and not plan.reorders:
        out = _best_reweighted(candidates, plan, judge, max(0, n - len(pins)), pins, scores, unavailable, excluded)
        return _pinned(out, pins, scores, marks)[:n]
    if pins:  # their own scores, if the model proposed them
        listed = list(available)
        scores = {i: s for i, s in listed if i in pins.values()}
        available = iter(listed)
    pinned = set(pins.values())
    kept: Iterable[Scored] = available
    if plan.conditions or pinned:
        kept = (p for p in available if p[0] not in pinned and judge(p[0])[0])
    slots = max(0, n - len(pins))
    if not plan.reweights and not plan.reorders:
        out = list(islice(kept, slots))  # filters and pins only: stop at n
    else:
        pool = list(kept)
        if plan.reweights:
            pool = [(i, s * judge(i)[1]) for i, s in pool]
            pool.sort(key=lambda pair: -pair[1])  # stable: ties keep the model's order
        lam = rules.diversity.mmr_lambda
        if lam is not None and lam < 1 and similar is not None:
            pool = mmr(pool, lam, similar, slots)
        pinned_verdicts = [judge(i) for i in pinned]
        out = _fill(pool, plan.promotes, rules.diversity.max_per_category, judge, slots, pinned_verdicts, marks)
    return _pinned(out, pins, scores, marks)[:n]


def _pinned(
    out: list[Scored], pins: Mapping[int, str], scores: Mapping[str, float], marks: MutableMapping[str, str]
) -> list[Scored]:
    for position in sorted(pins):
        out.insert(min(position - 1, len(out)), (pins[position], scores.get(pins[position], 0.0)))
        marks[pins[position]] = "pinned"
    return out


def _best_reweighted(
    candidates: Iterable[Scored],
    plan: Plan,
    judge: Callable[[str], Verdict],
    slots: int,
    pins: Mapping[int, str],
    scores: dict[str, float],
    unavailable: Container[str],
    excluded: Container[str],
) -> list[Scored]:
    """The ``slots`` best candidates by reweighted score, judging only those that could still be among them.

    A candidate with score ``s`` can reach at most ``s`` times every boost (``s`` times every bury when
    negative): once that is no better than the ``slots``-th best so far, it is passed over unread (its
    availability, its attributes), and in a sorted list of :class:`Candidates` so is the rest of the list.
    Ties keep the model's order. Fills ``scores`` with the pinned items'.
    """
    highest, lowest = plan.highest, plan.lowest
    pinned = set(pins.values())
    best: list[tuple[float, int]] = []  # a min-heap of the best (reweighted score, -order)
    pool: list[tuple[float, int, str]] = []
    seen: set[str] = set()
    order = 0
    for ids, values, ordered in _runs(candidates):
        for at, (item, score) in enumerate(zip(ids, values, strict=True)):
            if item in seen:
                continue
            seen.add(item)
            order += 1
            if item in pinned:
                scores.setdefault(item, score)
                continue
            if not slots or (len(best) >= slots and (score * (highest if score >= 0 else lowest)) <= best[0][0]):
                if ordered:  # nothing later in this list can rise above it: its first scores are passed over too
                    seen.update(ids[at + 1 :])
                    break
                continue
            if item in unavailable or item in excluded:
                continue
            verdict = judge(item)
            if not verdict[0]:
                continue
            weighted = score * verdict[1]
            pool.append((weighted, order, item))
            if len(best) < slots:
                heapq.heappush(best, (weighted, -order))
            elif (weighted, -order) > best[0]:
                heapq.heapreplace(best, (weighted, -order))
    if isinstance(candidates, Candidates):
        _pinned_scores(candidates, pinned, scores)
    pool.sort(key=lambda entry: (-entry[0], entry[1]))
    return [(item, weighted) for weighted, _, item in pool[:slots]]


def _runs(candidates: Iterable[Scored]) -> Iterator[tuple[Sequence[str], Sequence[float], bool]]:
    """``candidates`` as lists with whether each is sorted (a plain iterable: one list, taken as unsorted)."""
    if isinstance(candidates, Candidates):
        yield from candidates.runs()
        return
    listed = list(candidates)
    yield [i for i, _ in listed], [s for _, s in listed], False


def _pinned_scores(candidates: Candidates, pinned: set[str], scores: dict[str, float]) -> None:
    """The model's first score of each pinned item a list holds beyond where the re-weighting stopped reading."""
    for item in pinned.difference(scores):
        for ids, values in candidates.lists:
            if item in ids:
                scores[item] = values[ids.index(item)]
                break


def active_pins(
    rules: RuleSet, now: datetime, unavailable: Container[str] = frozenset(), excluded: Container[str] = frozenset()
) -> dict[int, str]:
    """Position -> item of the pins in force and showable; the first rule wins a position or an item (a stored
    rule set from before :func:`parse_rules` refused such pins)."""
    pins: dict[int, str] = {}
    for rule in rules.rules:
        if not isinstance(rule, PinRule) or not rule.active(now) or rule.position in pins:
            continue
        if rule.item_id not in unavailable and rule.item_id not in excluded and rule.item_id not in pins.values():
            pins[rule.position] = rule.item_id
    return pins


def _promotion_slots(promotes: Sequence[PromoteRule], slots: int) -> dict[int, int]:
    """Slot -> the index of the promotion that fills it: each rule ``share`` of the slots, spread evenly down
    the list (a slot another rule took goes to the next free one)."""
    taken: dict[int, int] = {}
    for index, rule in enumerate(promotes):
        count = round(slots * rule.share)
        for k in range(count):
            slot = min(slots - 1, round((k + 1) * slots / (count + 1)) - 1)
            while slot in taken and slot < slots - 1:
                slot += 1
            taken.setdefault(slot, index)
    return taken


def _fill(
    pool: list[Scored],
    promotes: Sequence[PromoteRule],
    cap: int | None,
    judge: Callable[[str], Verdict],
    slots: int,
    pinned: Sequence[Verdict],
    marks: MutableMapping[str, str],
) -> list[Scored]:
    """``slots`` items of ``pool`` in order, the promotions' slots held by their best matching items (marked
    ``promoted``), no category beyond ``cap`` (the pinned items count); over-cap items fill what is left at the end."""
    counts: dict[Any, int] = {}
    for verdict in pinned:
        counts[verdict[2]] = counts.get(verdict[2], 0) + 1

    def fits(pair: Scored) -> bool:
        category = judge(pair[0])[2]
        return cap is None or category is None or counts.get(category, 0) < cap

    promoted_at = _promotion_slots(promotes, slots)
    out: list[Scored] = []
    used: set[str] = set()
    for slot in range(slots):
        rule = promoted_at.get(slot)
        chosen = None
        if rule is not None:
            chosen = next((p for p in pool if p[0] not in used and fits(p) and judge(p[0])[3][rule]), None)
            if chosen is not None:
                marks[chosen[0]] = "promoted"
        if chosen is None:
            chosen = next((p for p in pool if p[0] not in used and fits(p)), None)
        if chosen is None:
            break
        used.add(chosen[0])
        category = judge(chosen[0])[2]
        counts[category] = counts.get(category, 0) + 1
        out.append(chosen)
    if len(out) < slots:  # the cap left slots empty: the best over-cap items fill them
        out += [p for p in pool if p[0] not in used][: slots - len(out)]
    return out


def mmr_window(n: int) -> int:
    """How many of the best candidates MMR chooses from: its cost is ``n x window``, not ``n x pool``."""
    return max(3 * n, 30)


def mmr(
    pool: list[Scored], lam: float, similar: Mapping[str, tuple[Sequence[str], Sequence[float]]], n: int
) -> list[Scored]:
    """Maximal marginal relevance (Carbonell and Goldstein) over the best :func:`mmr_window` candidates:
    greedily take the item with the best ``lam * relevance - (1 - lam) * max similarity to what is taken``.

    Relevance is the score scaled to [0, 1] over the window; the similarity of two items is the larger of
    each one's score in the other's similar list, each list scaled by its top score. Vectorized: one
    window x window matrix, then one pass per item taken (n=100 over 300 candidates: about a millisecond).
    """
    if len(pool) < 2:
        return pool
    head, tail = pool[: mmr_window(n)], pool[mmr_window(n) :]
    index = {item: k for k, (item, _) in enumerate(head)}
    sim = np.zeros((len(head), len(head)), dtype=np.float32)
    for row, (item, _) in enumerate(head):
        others, scores = similar.get(item, ((), ()))
        top = max(scores, default=0.0) or 1.0
        for other, score in zip(others, scores, strict=True):
            col = index.get(other)
            if col is not None and score > 0:
                sim[row, col] = score / top
    sim = np.maximum(sim, sim.T)
    relevance = np.array([s for _, s in head], dtype=np.float64)
    span = (relevance.max() - relevance.min()) or 1.0
    gain = lam * (relevance - relevance.min()) / span
    closest = np.zeros(len(head))
    free = np.ones(len(head), dtype=bool)
    order: list[int] = []
    for _ in range(min(n, len(head))):
        value = np.where(free, gain - (1 - lam) * closest, -np.inf)
        best = int(np.argmax(value))  # ties: the first, the better-ranked
        order.append(best)
        free[best] = False
        closest = np.maximum(closest, sim[best])
    rest = [k for k in range(len(head)) if free[k]]
    return [head[k] for k in order] + [head[k] for k in rest] + tail
