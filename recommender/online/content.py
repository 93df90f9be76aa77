"""New items without a retrain: the content model a version is published with, and the items added since.

Publishing writes the version's :class:`ContentIndex` (the token weights and tower embeddings of the content
model, and every catalog item's vectors) and, for each new item (no or few users in the training data,
``RECSYS_NEW_ITEM_MAX_USERS``): its similar list when the model has none (:meth:`ContentIndex.follows`: what
the content model ranks next after a view of it) and its place in the similar lists of the items whose
product pages it most likely follows (:meth:`ContentIndex.pages`, kept under ``attached:{item}``).

An API worker does the same for an item added or changed after the publish (``PATCH /v1/items/{id}``,
``POST /v1/items:batch``) the first time a request needs it, in its own process: :class:`LiveContent`
encodes the item's details with the version's weights (numpy only), so the next request shows it.
The ``new`` placement ranks the new items for a user by their taste vector, published with their list.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recommender.data.content import TokenWeights, item_tokens
from recommender.online.keys import List

ATTACH_PAGES = 20
"""A new item joins the similar lists of at most this many items (the ones it most likely follows)."""
ATTACHED_KEPT = 10
"""New items kept per item as the ones that may join its similar list (the best first)."""
ADDS_PER_REQUEST = 64
"""Changed items a request takes into the index at most (each costs two products over the catalog); the
next requests take the rest."""


@dataclass
class ContentIndex:
    """The content model's item side for every item of a version's catalog, and what an item needs to join it."""

    weights: TokenWeights
    item_tokens: np.ndarray
    """Tokens x dim: the item tower's token embeddings."""
    user_tokens: np.ndarray
    """Tokens x dim: the user tower's (what a viewed item says about the next)."""
    token_bias: np.ndarray
    ids: list[str]
    vectors: np.ndarray
    """Items x dim: each item's item-tower vector."""
    bias: np.ndarray
    after: np.ndarray
    """Items x dim: each item as a one-item history (user tower; with its trained id embedding when it has one)."""
    new: np.ndarray
    """Items: no or few users in the training data."""
    modelled: np.ndarray
    """Items: the collaborative model has a similar list for it."""
    position: dict[str, int] = field(init=False)
    _targets: tuple[list[str], np.ndarray] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.position = {item: p for p, item in enumerate(self.ids)}

    def encode(self, details: Mapping[str, Any]) -> tuple[np.ndarray, float, np.ndarray]:
        """One item's (vector, bias, one-item history) from its details alone."""
        index, weight = self.weights.of(item_tokens(details))
        vector = (self.item_tokens[index] * weight[:, None]).sum(0)
        after = (self.user_tokens[index] * weight[:, None]).sum(0)
        return vector.astype(np.float32), float(self.token_bias[index].sum()), after.astype(np.float32)

    def follows(self, after: np.ndarray, k: int, itself: str | None = None) -> List:
        """The ``k`` items the content model ranks next after a view of an item with history vector ``after``."""
        return self.follows_many(after[None, :], k, [itself])[0]

    def follows_many(self, afters: np.ndarray, k: int, selves: Sequence[str | None]) -> list[List]:
        """:meth:`follows` for many history vectors at once (one matrix product), each without its own item."""
        scores = afters @ self.vectors.T + self.bias
        for row, item in enumerate(selves):
            if item is not None and item in self.position:
                scores[row, self.position[item]] = -np.inf
        return [_top(self.ids, row, k) for row in scores]

    def pages(self, vector: np.ndarray, bias: float, k: int = ATTACH_PAGES) -> List:
        """The ``k`` modelled items after whose view an item with ``vector`` ranks highest (its score after each)."""
        return self.pages_many(vector[None, :], np.array([bias]), k)[0]

    def pages_many(self, vectors: np.ndarray, biases: np.ndarray, k: int = ATTACH_PAGES) -> list[List]:
        """:meth:`pages` for many items at once (one matrix product)."""
        if self._targets is None:  # the pages a new item may join: kept once (the modelled items' vectors)
            chosen = np.flatnonzero(self.modelled & ~self.new)
            self._targets = ([self.ids[t] for t in chosen], np.ascontiguousarray(self.after[chosen].T))
        names, after = self._targets
        return [_top(names, row, k) for row in vectors @ after + biases[:, None]]

    def for_user(self, taste: np.ndarray | None, k: int) -> List:
        """The new items, best first for a user of ``taste`` (by their bias alone without one)."""
        chosen = np.flatnonzero(self.new)
        scores = self.bias[chosen] + (self.vectors[chosen] @ taste if taste is not None else 0.0)
        return _top([self.ids[i] for i in chosen], np.asarray(scores, dtype=np.float64), k)

    def to_bytes(self) -> bytes:
        """An ``.npz`` of the arrays with the token and item names (what publishing writes, base64 parts)."""
        out = io.BytesIO()
        tokens = sorted(self.weights.vocabulary, key=self.weights.vocabulary.__getitem__)
        names = json.dumps({"tokens": tokens, "ids": self.ids, "max_tokens": self.weights.max_tokens})
        np.savez(
            out,
            names=np.frombuffer(names.encode(), dtype=np.uint8),
            **{k: getattr(self, k) for k in ("item_tokens", "user_tokens", "token_bias", "vectors", "bias", "after")},
            idf=self.weights.idf,
            new=self.new,
            modelled=self.modelled,
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> ContentIndex:
        """Read what :meth:`to_bytes` wrote."""
        with np.load(io.BytesIO(blob)) as a:
            arrays = {k: a[k] for k in a.files}
        names = json.loads(arrays.pop("names").tobytes())
        weights = TokenWeights({t: i for i, t in enumerate(names["tokens"])}, arrays.pop("idf"), names["max_tokens"])
        return cls(weights=weights, ids=list(names["ids"]), **arrays)


def _top(ids: Sequence[str], scores: np.ndarray, k: int) -> List:
    """The ``k`` best of ``scores`` (finite ones), best first, ties in ``ids`` order."""
    finite = np.flatnonzero(np.isfinite(scores))
    if len(finite) > k:
        finite = finite[np.argpartition(-scores[finite], k - 1)[:k]]
    order = finite[np.lexsort((finite, -scores[finite]))]
    return [ids[i] for i in order], [round(float(scores[i]), 6) for i in order]


def with_new(similar: List, attached: Sequence[str], slot: int, count: int) -> tuple[List, list[str]]:
    """``similar`` with up to ``count`` of the ``attached`` new items (best first) after its first ``slot`` items,
    and the new items it took.

    An inserted item takes the score of the item before it, so the list stays sorted by score.
    """
    present = set(similar[0])
    news = [i for i in dict.fromkeys(attached) if i not in present][:count]
    if not news:
        return similar, news
    ids, scores = similar
    cut = min(slot, len(ids))
    score = scores[cut - 1] if cut else (scores[0] if scores else 0.0)
    return (ids[:cut] + news + ids[cut:], scores[:cut] + [score] * len(news) + scores[cut:]), news


def merged(lists: Iterable[List]) -> List:
    """Several (item, score) lists as one, best score first, each item once (its best)."""
    best: dict[str, float] = {}
    for ids, scores in lists:
        for item, score in zip(ids, scores, strict=True):
            if score > best.get(item, -np.inf):
                best[item] = score
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    return [i for i, _ in ranked], [s for _, s in ranked]


@dataclass
class LiveContent:
    """One worker's additions to a version's index: the items added or changed since it was published."""

    index: ContentIndex
    similar: dict[str, List] = field(default_factory=dict)
    """Item added since -> its own similar list."""
    attached: dict[str, List] = field(default_factory=dict)
    """Item -> the items added since that join its similar list (with their scores after it)."""
    extra: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    """Item added since, and new -> (vector, bias), for the ``new`` placement."""
    seen: tuple[int, int] = (-1, -1)
    """The live state (generation, content epoch) whose content log :attr:`offset` counts in."""
    offset: int = 0

    def restart(self, seen: tuple[int, int]) -> None:
        """Forget the additions: the live state's content log starts again (a reload, or a compaction)."""
        self.similar, self.attached, self.extra, self.seen, self.offset = {}, {}, {}, seen, 0

    def add(self, item: str, details: Mapping[str, Any], k: int) -> None:
        """Encode one added or changed item and give it its place: its own list, the lists it joins.

        A modelled item keeps its history vector (its trained part stands) and joins no lists unless it is
        new; an item without a token the model knows gets no list and no place (it would tie with all).
        """
        index = self.index
        if not len(index.weights.of(item_tokens(details))[0]):
            return
        vector, bias, after = index.encode(details)
        p = index.position.get(item)
        if p is not None:  # a published item's content changed: it is what it says now
            index.vectors[p], index.bias[p] = vector, bias
            if not index.modelled[p]:
                index.after[p] = after
        if p is not None and not index.new[p]:
            return
        self.extra[item] = (vector, bias)
        if p is None or not index.modelled[p]:
            self.similar[item] = index.follows(after, k, item)
        for page, score in zip(*index.pages(vector, bias), strict=True):
            if page == item:
                continue
            ids, scores = self.attached.get(page, ([], []))
            kept = [(i, s) for i, s in zip(ids, scores, strict=True) if i != item]
            found = merged([([i for i, _ in kept], [s for _, s in kept]), ([item], [score])])
            self.attached[page] = found[0][:ATTACHED_KEPT], found[1][:ATTACHED_KEPT]

    def for_user(self, taste: np.ndarray | None, k: int) -> List:
        """The new items (published and added since) for a user of ``taste``, best first."""
        published = self.index.for_user(taste, k)
        if not self.extra:
            return published
        names = list(self.extra)
        vectors = np.stack([self.extra[i][0] for i in names])
        scores = np.array([self.extra[i][1] for i in names]) + (vectors @ taste if taste is not None else 0.0)
        return merged([published, _top(names, scores, k)])
