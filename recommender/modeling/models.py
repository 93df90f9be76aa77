"""Recommender models behind one small interface (implicit's conventions).

``fit(user_items)``; ``recommend(users, user_items, n)`` returns ``(ids, scores)`` arrays of
shape (len(users), n) with already-seen items filtered (id -1 pads a short list);
``similar_items(items, n)`` likewise. Hyperparameters are constructor arguments.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp

from recommender.data.reasons import nearest, unit
from recommender.modeling.matrix import Sequences
from recommender.modeling.reasons import histories, pack, top_contributor
from recommender.progress import StepFn, silent

T = TypeVar("T")

PADDING_SCORE = -1e37
"""implicit pads short lists with the lowest float32; anything at or below this is padding."""


def _clean(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mark padding (non-finite scores) with id -1 and score 0."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    bad = ~np.isfinite(scores) | (scores <= PADDING_SCORE) | (ids < 0)
    return np.where(bad, -1, ids), np.where(bad, 0.0, scores).astype(np.float32)


def _drop_seen(
    users: np.ndarray, user_items: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove seen items (implicit's KNN can return them at score 0) and move padding to the end."""
    rows = np.repeat(users, ids.shape[1]).reshape(ids.shape)
    seen = np.asarray(user_items[rows.ravel(), np.maximum(ids, 0).ravel()]).reshape(ids.shape) != 0
    drop = seen & (ids >= 0)
    ids, scores = np.where(drop, -1, ids), np.where(drop, 0.0, scores).astype(np.float32)
    order = np.argsort(ids < 0, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


@dataclass(frozen=True)
class Validation:
    """Held-out items a model may stop its training on (one per user row)."""

    users: np.ndarray
    targets: np.ndarray


class Model(ABC):
    """What every model family provides.

    ``sequences`` (each user's items in time order) matter only to families with ``uses_order``;
    the others read the confidence matrix alone and ignore them, as they ignore ``validation``.
    """

    family: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    uses_order: ClassVar[bool] = False

    def __init__(self, seed: int = 0, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.family} has no parameter(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        self.seed = seed
        self.params: dict[str, Any] = {**self.defaults, **params}

    @abstractmethod
    def fit(
        self,
        user_items: sp.csr_matrix,
        show_progress: bool = False,
        *,
        sequences: Sequences | None = None,
        validation: Validation | None = None,
        report: StepFn = silent,
    ) -> None:
        """Learn from a users x items confidence matrix (and the sequences, for families that use order)."""

    @abstractmethod
    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, *, sequences: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` unseen items for each user row in ``users`` (``user_items`` has all users' rows)."""

    def sequence_part(self) -> tuple[Model, float] | None:
        """The member that reads the order and its weight (itself and 1.0 for a sequential model), if any."""
        return None

    def refitted(
        self, user_items: sp.csr_matrix, *, sequences: Sequences | None = None, report: StepFn = silent
    ) -> Model:
        """A model like this one, fitted on more data without validation: by default, from scratch."""
        model = type(self)(seed=self.seed, **self.params)
        model.fit(user_items, sequences=sequences, report=report)
        return model

    @abstractmethod
    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` other items for each item column in ``items``."""

    explanation = "none"
    """How :meth:`explain` attributes a score to the user's past items."""

    def explain(
        self, user: int, user_items: sp.csr_matrix, item: int, n: int = 10, *, sequences: Sequences | None = None
    ) -> list[tuple[int, float]]:
        """The user's past items that contributed most to ``item``'s score, largest first (by default the past
        items nearest to it in :meth:`item_space`)."""
        space = self.item_space()
        if space is None or user < 0:
            return []
        past = np.unique(sequences.of(user)) if sequences is not None else user_items[user].indices
        return _top(past, space[past] @ space[item], n)

    def item_space(self) -> np.ndarray | None:
        """Unit item vectors whose cosine says which past item is behind a recommendation (None: no such space)."""
        return None

    def _once(self, name: str, fitted: object, build: Callable[[], T]) -> T:
        """``build()``, computed once per ``fitted`` state (a refit replaces that state, and the value with it)."""
        cached = self.__dict__.get(name)
        if cached is None or cached[0] is not fitted:
            cached = self.__dict__[name] = (fitted, build())
        return cached[1]

    def affinity(
        self, users: np.ndarray, user_items: sp.csr_matrix, cols: np.ndarray, *, sequences: Sequences | None = None
    ) -> np.ndarray | None:
        """Each user row's score for the item columns ``cols`` (their mean), as the model scores items when it
        ranks them for the user: an audience's ranking. ``users`` come in one call (a blend standardizes its
        members' scores over them). None: the family scores every user alike (popular)."""
        return None

    def because(self, users: np.ndarray, user_items: sp.csr_matrix, ids: np.ndarray) -> np.ndarray | None:
        """The past item column behind each of ``ids`` (users x n; -1: none), or None when the family has no
        reason of that kind (the popular model)."""
        space = self.item_space()
        if space is None:
            return None
        return nearest(space, histories(users, user_items)[0], ids)

    @abstractmethod
    def _save_state(self, folder: Path) -> None: ...

    @abstractmethod
    def _load_state(self, folder: Path) -> None: ...

    def save(self, folder: Path) -> None:
        """Write the model into ``folder`` (``meta.json`` plus the family's state)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").write_text(json.dumps({"family": self.family, "params": self.params, "seed": self.seed}))
        self._save_state(folder)


class PopularModel(Model):
    """Most-interacted items first (by number of distinct users): the baseline."""

    family = "popular"
    defaults: ClassVar[dict[str, Any]] = {}
    batch = 2048

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False, **_: Any) -> None:
        """Count distinct users per item."""
        self.popularity = np.asarray((user_items > 0).sum(axis=0)).ravel().astype(np.float32)

    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Most popular unseen items: only the top ``n + longest history`` items can qualify."""
        order = np.argsort(-self.popularity, kind="stable")
        history = np.diff(user_items.indptr)[users]
        ids = np.full((len(users), n), -1, dtype=np.int64)
        scores = np.zeros((len(users), n), dtype=np.float32)
        for lo in range(0, len(users), self.batch):
            rows = users[lo : lo + self.batch]
            candidates = order[: min(len(order), n + int(history[lo : lo + self.batch].max(initial=0)))]
            unseen = user_items[rows][:, candidates].toarray() == 0
            rank = np.cumsum(unseen, axis=1)
            r, c = np.nonzero(unseen & (rank <= n))
            ids[lo + r, rank[r, c] - 1] = candidates[c]
            scores[lo + r, rank[r, c] - 1] = self.popularity[candidates[c]]
        return ids, scores

    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Most popular other items (the same list for every item)."""
        order = np.argsort(-self.popularity, kind="stable")[: n + 1]
        ids = np.full((len(items), n), -1, dtype=np.int64)
        scores = np.zeros((len(items), n), dtype=np.float32)
        for r, item in enumerate(items):
            row = order[order != item][:n]
            ids[r, : len(row)], scores[r, : len(row)] = row, self.popularity[row]
        return ids, scores

    def _save_state(self, folder: Path) -> None:
        np.save(folder / "popularity.npy", self.popularity)

    def _load_state(self, folder: Path) -> None:
        self.popularity = np.load(folder / "popularity.npy")


class ImplicitModel(Model):
    """A model from the ``implicit`` library."""

    @abstractmethod
    def _build(self) -> Any:
        """A new instance of the wrapped implicit model."""

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False, **_: Any) -> None:
        """Fit the wrapped implicit model."""
        self.model = self._build()
        with warnings.catch_warnings():  # BM25Recommender passes itself a COO matrix and warns about it
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model.fit(user_items, show_progress=show_progress)

    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """implicit's batch ``recommend`` with seen items filtered."""
        # never more than the catalogue: beyond it implicit pads with item 0, a duplicate
        top = min(n, user_items.shape[1])
        ids, scores = self.model.recommend(users, user_items[users], N=top, filter_already_liked_items=True)
        ids, scores = _clean(np.atleast_2d(ids), np.atleast_2d(scores))
        return _pad(*_drop_seen(users, user_items, ids, scores), n)

    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """implicit's batch ``similar_items``, without the item itself."""
        ids, scores = self.model.similar_items(items, N=min(n + 1, self._items()))
        ids, scores = _clean(np.atleast_2d(ids), np.atleast_2d(scores))
        keep = ids != items[:, None]
        out_ids = np.full((len(items), n), -1, dtype=np.int64)
        out_scores = np.zeros((len(items), n), dtype=np.float32)
        for r in range(len(items)):
            row_ids, row_scores = ids[r][keep[r]][:n], scores[r][keep[r]][:n]
            out_ids[r, : len(row_ids)], out_scores[r, : len(row_ids)] = row_ids, row_scores
        return out_ids, out_scores

    def _items(self) -> int:
        """Items the fitted model knows."""
        known = getattr(self.model, "item_factors", None)
        return int((known if known is not None else self.model.similarity).shape[0])

    explanation = "history weight x dot product of item factors"

    def explain(
        self, user: int, user_items: sp.csr_matrix, item: int, n: int = 10, *, sequences: Sequences | None = None
    ) -> list[tuple[int, float]]:
        """Factor models: how much each past item's factors point the same way as the item's."""
        row = user_items[user]
        factors = np.asarray(self.model.item_factors)
        return _top(row.indices, row.data * (factors[row.indices] @ factors[item]), n)

    def affinity(
        self, users: np.ndarray, user_items: sp.csr_matrix, cols: np.ndarray, *, sequences: Sequences | None = None
    ) -> np.ndarray | None:
        """The user factors against the items' mean factor vector (the dot product that ranks items)."""
        target = np.asarray(self.model.item_factors)[cols].mean(axis=0)
        return np.asarray(self.model.user_factors)[users] @ target

    def item_space(self) -> np.ndarray | None:
        """The item factors, scaled to unit length (computed once per fitted model)."""
        return self._once("_space", self.model, lambda: unit(np.asarray(self.model.item_factors)))

    def _save_state(self, folder: Path) -> None:
        self.model.save(str(folder / "implicit.npz"))

    def _load_state(self, folder: Path) -> None:
        self.model = type(self._build()).load(str(folder / "implicit.npz"))


def _top(items: np.ndarray, contributions: np.ndarray, n: int) -> list[tuple[int, float]]:
    order = np.argsort(-contributions, kind="stable")[:n]
    return [(int(items[i]), float(contributions[i])) for i in order]


def _pad(ids: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    if ids.shape[1] >= n:
        return ids[:, :n], scores[:, :n]
    pad = n - ids.shape[1]
    return (np.pad(ids, ((0, 0), (0, pad)), constant_values=-1), np.pad(scores, ((0, 0), (0, pad))))


class ALSModel(ImplicitModel):
    """Alternating least squares on confidence-weighted implicit feedback (Hu, Koren, Volinsky)."""

    family = "als"
    explanation = "implicit's ALS explain (the user's solve, item by item)"

    def explain(
        self, user: int, user_items: sp.csr_matrix, item: int, n: int = 10, *, sequences: Sequences | None = None
    ) -> list[tuple[int, float]]:
        """implicit's ``explain``: each past item's share of the score."""
        _, contributions, _ = self.model.explain(user, user_items[user], item, N=n)
        return [(int(i), float(c)) for i, c in contributions]

    defaults: ClassVar[dict[str, Any]] = {"factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15}

    def _build(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        return AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            random_state=self.seed,
        )


class BPRModel(ImplicitModel):
    """Bayesian personalized ranking (single-threaded so that a seed reproduces it exactly)."""

    family = "bpr"
    defaults: ClassVar[dict[str, Any]] = {
        "factors": 64,
        "learning_rate": 0.05,
        "regularization": 0.01,
        "iterations": 100,
    }

    def _build(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        p = self.params
        return BayesianPersonalizedRanking(
            factors=int(p["factors"]),
            learning_rate=float(p["learning_rate"]),
            regularization=float(p["regularization"]),
            iterations=int(p["iterations"]),
            random_state=self.seed,
            num_threads=1,
        )


class ItemKNNModel(ImplicitModel):
    """Item-item nearest neighbours, cosine or BM25 similarity."""

    family = "itemknn"
    defaults: ClassVar[dict[str, Any]] = {"K": 100, "similarity": "bm25", "K1": 1.2, "B": 0.75}
    explanation = "history weight x item-item similarity"

    def explain(
        self, user: int, user_items: sp.csr_matrix, item: int, n: int = 10, *, sequences: Sequences | None = None
    ) -> list[tuple[int, float]]:
        """The score is a sum over past items of weight x similarity: each term is a contribution."""
        row = user_items[user]
        similarity = self.model.similarity[row.indices][:, [item]].toarray().ravel()
        return _top(row.indices, row.data * similarity, n)

    def item_space(self) -> np.ndarray | None:
        """None: item-KNN has similarities, not vectors."""
        return None

    def affinity(
        self, users: np.ndarray, user_items: sp.csr_matrix, cols: np.ndarray, *, sequences: Sequences | None = None
    ) -> np.ndarray | None:
        """The items' item-KNN score for each user: history weight x similarity, summed (then averaged)."""
        toward = sp.csr_matrix(self.model.similarity)[:, cols].sum(axis=1)
        every = len(users) == user_items.shape[0] and bool((users == np.arange(len(users))).all())
        return np.asarray((user_items if every else user_items[users]) @ toward).ravel() / len(cols)  # no copy

    def because(self, users: np.ndarray, user_items: sp.csr_matrix, ids: np.ndarray) -> np.ndarray | None:
        """The past item with the largest term of the score's sum (history weight x similarity)."""
        past, weights = histories(users, user_items)
        packed = self._once("_packed", self.model, lambda: pack(self.model.similarity))  # not once per batch
        return top_contributor(packed, past, weights, ids)

    def _build(self) -> Any:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        p = self.params
        if p["similarity"] == "cosine":
            return CosineRecommender(K=int(p["K"]))
        if p["similarity"] == "bm25":
            return BM25Recommender(K=int(p["K"]), K1=float(p["K1"]), B=float(p["B"]))
        raise ValueError(f"itemknn similarity must be cosine or bm25, not {p['similarity']!r}")
