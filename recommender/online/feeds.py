"""The feed stage of a request: each placement's candidate lists, best first, and where they came from.

* ``user``: the user's precomputed list (blended with their session, or re-scored by the sequential
  model), then the popular items to fill (``popular`` for a user without a list);
* ``similar``: items similar to ``item_id``, re-ranked towards the user's own list when known;
* ``together``: the cart items' bought-together lists fused (their similar lists where they have none);
* ``buy_again``: bought items whose category's repurchase interval has passed;
* ``recent``: the user's session, newest first;
* ``new``: the items with no or few users in the training data and the ones added since, ranked for the
  user by the content model (:mod:`recommender.online.content`).

A ``similar`` list also carries the new items that most likely follow a view of its item, after its
first ``RECSYS_NEW_ITEM_SLOT`` items.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import orjson
from redis.asyncio import Redis

from recommender.config import Settings
from recommender.data.reasons import Reason
from recommender.online.content import ADDS_PER_REQUEST, LiveContent, merged, with_new
from recommender.online.explore import CANDIDATES, Counts, drawn
from recommender.online.guard import Guard
from recommender.online.keys import Keys, decode, decode_behind
from recommender.online.listing import POPULAR, Lists, Why, arranged, unscored
from recommender.online.livestate import AVAILABILITY, LiveState
from recommender.online.placements import Placement, due_again, personalized
from recommender.online.rules import RuleSet
from recommender.online.session import blend
from recommender.online.versions import Item, List, Versions, VersionState


class PlacementQueryError(ValueError):
    """A placement request lacks what its feed needs (e.g. ``item_id`` for ``product``)."""


@dataclass(frozen=True)
class FeedQuery:
    """What a feed reads of the request."""

    user: str | None
    """The pseudonymized user id."""
    item_id: str | None
    cart: tuple[str, ...]
    category: str | None
    n: int


class Feeds:
    """Reads each feed's lists from Redis (every call through the service's guard)."""

    def __init__(self, redis: Redis, keys: Keys, guard: Guard, versions: Versions, settings: Settings) -> None:
        self.redis, self.keys, self.guard, self.versions, self.settings = redis, keys, guard, versions, settings

    async def lists(self, placement: Placement, state: VersionState, live: LiveState, q: FeedQuery) -> Feed:
        """The placement's candidate lists, best first, where they came from, and why each list holds its items."""
        version, user = state.version, q.user
        if placement.feed == "recent":
            session = await self.guard(self.redis.get(self.keys.session(_needs_user(user))))
            recent = orjson.loads(session) if session else []
            return Feed([(recent, [0.0] * len(recent))], "session", [Why("session")])
        if placement.feed == "similar":
            if not q.item_id:
                raise PlacementQueryError("this placement needs item_id")
            keys = [self.keys.similar(version, q.item_id), self.keys.attached(version, q.item_id)]
            values = await self.guard(self.redis.mget(keys + ([self.keys.user(version, user)] if user else [])))
            similar, why = await self.with_new_items(state, live, q.item_id, decode(values[0]), decode(values[1]))
            if user:
                similar = personalized(similar, decode(values[2]), placement.personalize)
            return Feed([similar, unscored(await self.versions.popular(state, None))], "similar", [why, POPULAR])
        if placement.feed == "new":
            return Feed([await self._new_items(state, live, user)], "new", [Why("new")])
        if placement.feed == "together":
            if not q.cart:
                raise PlacementQueryError("this placement needs cart (comma-separated item ids)")
            return await self._together(state, q.cart)
        if placement.feed == "buy_again":
            bought = decode(await self.guard(self.redis.get(self.keys.bought(version, _needs_user(user)))))
            info = live.details(state, await self.versions.details(state, bought[0]))
            due = due_again(bought, lambda i: (info.get(i) or {}).get("category"), state.repurchase, time.time())
            return Feed([due], "buy_again", [Why("buy_again")])
        return await self._user_lists(state, user, q.n, q.category)

    async def content(self, state: VersionState, live: LiveState) -> LiveContent | None:
        """The version's content index with every item added or changed since taken in (None: it has none)."""
        content = await self.versions.content(state)
        if content is None:
            return None
        if content.seen != (live.generation, live.content_epoch):
            content.restart((live.generation, live.content_epoch))
        end = min(len(live.content_log), content.offset + ADDS_PER_REQUEST)  # noted before any await
        todo = list(dict.fromkeys(live.content_log[content.offset : end]))
        if todo:
            info = live.details(state, await self.versions.details(state, set(todo)))
            for item in todo:
                changed = live.changed(state, item)
                if changed and not AVAILABILITY.issuperset(changed):  # (older changes: the version has them)
                    content.add(item, info.get(item) or {}, self.settings.similar_n)
            content.offset = end
        return content

    async def with_new_items(
        self, state: VersionState, live: LiveState, item: str, similar: List, attached: List
    ) -> tuple[List, Why]:
        """An item's similar list with the new items that join it (published, and added since in this worker's
        copy), and its reasons; an item added since gets the content model's list."""
        content = await self.content(state, live) if live.content_log else None
        if content is not None:
            similar = content.similar.get(item, similar)
            attached = merged([attached, content.attached.get(item, ([], []))])
        blocked = live.unavailable(state)  # a hidden or sold-out new item leaves its slot to the next
        shown = [i for i in attached[0] if i not in blocked]
        joined, news = with_new(similar, shown, self.settings.new_item_slot, self.settings.new_items_per_list)
        return joined, Why("similar_to", item_id=item, new=frozenset(news))

    async def _new_items(self, state: VersionState, live: LiveState, user: str | None, n: int | None = None) -> List:
        """The new items (no or few users in the training data, or added since), best first for ``user``."""
        content = await self.content(state, live)
        if content is None:
            return [], []
        stored = await self.guard(self.redis.get(self.keys.taste(state.version, user))) if user else None
        taste = np.frombuffer(base64.b64decode(stored), dtype=np.float16).astype(np.float32) if stored else None
        return content.for_user(taste, n or self.settings.top_n)

    async def explore(self, state: VersionState, live: LiveState, q: ExploreQuery) -> list[Item]:
        """Up to ``q.count`` new items for exploration slots: the content model's best :data:`CANDIDATES` for the
        user in Thompson order (:func:`recommender.online.explore.drawn`), under the rules' filters, available and
        not excluded."""
        ids, scores = await self._new_items(state, live, q.user, CANDIDATES)
        score = dict(zip(ids, scores, strict=True))
        order = drawn(ids, scores, q.counts, q.rng)
        candidates = [(order, [score[i] for i in order])]
        whys = [EXPLORE] if self.settings.reasons else None
        return await arranged(
            self.versions, live, state, candidates, q.rules.filters, q.count, q.excluded, q.details, whys
        )

    async def _together(self, state: VersionState, cart: tuple[str, ...]) -> Feed:
        keys = [self.keys.together(state.version, i) for i in cart] + [
            self.keys.similar(state.version, i) for i in cart
        ]
        values = await self.guard(self.redis.mget(keys))
        lists, kinds = [], []
        for item, together, similar in zip(cart, values[: len(cart)], values[len(cart) :], strict=True):
            lists.append(decode(together if together is not None else similar))
            kinds.append((item, "bought_together" if together is not None else "similar_to"))
        ids, scores = blend(([], []), lists, list(cart), 1.0)
        why = Why("bought_together", behind=_first_holding(lists, kinds))
        return Feed([(ids, scores), unscored(await self.versions.popular(state, None))], "together", [why, POPULAR])

    async def _user_lists(self, state: VersionState, user: str | None, n: int, category: str | None) -> Feed:
        """The user's precomputed list (blended with their session), then popular items to fill."""
        if user is None:
            return Feed([await self.versions.popular(state, category)], "popular", [POPULAR])
        version = state.version
        if self.settings.session_items:  # the precomputed list and the session in one round trip
            stored, session = await self.guard(self.redis.mget(self.keys.user(version, user), self.keys.session(user)))
        else:
            stored, session = await self.guard(self.redis.get(self.keys.user(version, user))), None
        ids, scores, behind = decode_behind(stored)
        source = "personalized" if ids else "popular"
        why = Why("similar_to", stored=behind) if behind is not None else POPULAR  # (the popular family names none)
        fill = await self.versions.popular(state, category)
        if session:
            ids, scores, fill, source, why = await self._with_session(
                state, user, orjson.loads(session), (ids, scores), fill, source, n, why
            )
        if not ids:
            return Feed([fill], source, [POPULAR])
        return Feed([(ids, scores), unscored(fill)], source, [why, POPULAR])

    async def _with_session(
        self,
        state: VersionState,
        user: str,
        recent: list[str],
        stored: List,
        popular: List,
        source: str,
        n: int,
        why: Why,
    ) -> tuple[list[str], list[float], List, str, Why]:
        """The user's list after their session: re-scored by the sequential model when the version has one,
        else blended with the similar lists of the recent items (popular for a cold user); and its reasons."""
        base = stored if stored[0] else popular
        scorer = await self.versions.scorer(state)
        seen = set(recent)
        if scorer is not None and scorer.weight > 0:
            past = await self.guard(self.redis.get(self.keys.sequence(state.version, user)))
            history = [*(orjson.loads(past) if past else []), *reversed(recent)]
            ids, scores = scorer.top(history, self.settings.top_n)
            closest = scorer.nearest(history)
            if scorer.weight < 1.0 and stored[0]:  # a blend: the other member's part is in the stored list
                ids, scores = blend((ids, scores), [stored], recent, (1.0 - scorer.weight) / scorer.weight)

            def behind(_: int, item: str) -> Reason | None:
                found = closest(item)
                if found is None:
                    return None
                return {"kind": "session" if found in seen else "similar_to", "item_id": found}

            why = Why("session", behind=behind)
        else:
            values = await self.guard(self.redis.mget([self.keys.similar(state.version, i) for i in recent]))
            lists = [decode(v) for v in values]
            ids, scores = blend(base, lists, recent, self.settings.session_weight)
            in_base = {item: k for k, item in enumerate(base[0])}
            earlier = why if stored[0] else POPULAR
            from_session = _first_holding(lists, [(i, "session") for i in recent])
            why = Why(
                "session",
                behind=lambda k, item: (
                    from_session(k, item) or (earlier.of(in_base[item], item) if item in in_base else None)
                ),
            )
        fill = [i for i in popular[0] if i not in seen]
        changed = ids[:n] != [i for i in base[0] if i not in seen][:n]
        return ids, scores, (fill, [0.0] * len(fill)), "session" if changed else source, why


EXPLORE = Why("explore")


@dataclass(frozen=True)
class ExploreQuery:
    """What an exploration draw reads of the request."""

    user: str | None
    count: int
    rules: RuleSet
    excluded: AbstractSet[str]
    details: bool
    counts: Counts
    """Item -> (shown, clicked) in exploration slots of this model version."""
    rng: np.random.Generator


@dataclass(frozen=True)
class Feed:
    """A feed's answer: its candidate lists, best first, where they came from, and one :class:`Why` per list."""

    lists: Lists
    source: str
    whys: list[Why]


def _first_holding(lists: Lists, kinds: list[tuple[str, str]]) -> Callable[[int, str], Reason | None]:
    """The reason of the first of ``lists`` holding an item: ``kinds`` says each list's item and kind (the index
    of which items each list holds is made on the first call)."""
    index: dict[str, Reason] = {}
    built = False

    def behind(_: int, item: str) -> Reason | None:
        nonlocal built
        if not built:
            for (ids, _scores), (source, kind) in zip(reversed(lists), reversed(kinds), strict=True):
                index.update({i: {"kind": kind, "item_id": source} for i in ids})
            built = True
        return index.get(item)

    return behind


def _needs_user(user: str | None) -> str:
    if user is None:
        raise PlacementQueryError("this placement needs user_id")
    return user
