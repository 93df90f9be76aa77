"""Blends: two fitted families fused into one model, by normalized score or by rank.

Each member ranks ``depth`` candidates per user; a candidate's blended score is
``weight * a + (1 - weight) * b``, where a and b are its min-max normalized scores in the two
lists (``fusion="score"``) or its reciprocal ranks ``1 / (RRF_K + rank)`` (``fusion="rank"``);
an item missing from a list gets nothing from it. :func:`choose` picks the fusion and the weight
on the validation item only; the blend is then one model: trained, registered and published as
any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recommender.modeling.evaluation import accuracy_at, target_ranks
from recommender.modeling.matrix import Sequences
from recommender.modeling.models import Model, Validation
from recommender.progress import StepFn, silent

RRF_K = 60.0
FUSIONS = ("score", "rank")
WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.1, 0.9, 9))

Lists = tuple[np.ndarray, np.ndarray]


def _contributions(ids: np.ndarray, scores: np.ndarray, fusion: str) -> np.ndarray:
    valid = ids >= 0
    if fusion == "rank":
        return np.where(valid, 1.0 / (RRF_K + np.arange(ids.shape[1])), 0.0)
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return np.where(valid, (scores - np.where(np.isfinite(low), low, 0.0)) / span, 0.0)


def fuse(a: Lists, b: Lists, weight: float, fusion: str, n: int) -> Lists:
    """The top ``n`` of two lists per row, fused (ties by item id); -1 pads."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
    ids = np.concatenate([a[0], b[0]], axis=1)
    gain = np.concatenate([weight * _contributions(*a, fusion), (1.0 - weight) * _contributions(*b, fusion)], axis=1)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1]).reshape(ids.shape)
    valid = ids >= 0
    width = int(ids.max(initial=0)) + 1
    keys, inverse = np.unique(rows[valid].astype(np.int64) * width + ids[valid], return_inverse=True)
    total = np.bincount(inverse, weights=gain[valid])
    row, item = keys // width, keys % width
    order = np.lexsort((item, -total, row))
    row, item, total = row[order], item[order], total[order]
    position = np.arange(len(row)) - np.searchsorted(row, row)
    keep = position < n
    out_ids = np.full((len(ids), n), -1, dtype=np.int64)
    out_scores = np.zeros((len(ids), n), dtype=np.float32)
    out_ids[row[keep], position[keep]] = item[keep]
    out_scores[row[keep], position[keep]] = total[keep]
    return out_ids, out_scores


def choose(a: Lists, b: Lists, targets: np.ndarray, k: int) -> tuple[str, float, float]:
    """The fusion and weight of ``a`` with the best NDCG@k of ``targets``: (fusion, weight, ndcg)."""
    best = ("rank", 0.5, -1.0)
    for fusion in FUSIONS:
        for weight in WEIGHTS:
            ids, _ = fuse(a, b, weight, fusion, k)
            ndcg = accuracy_at(target_ranks(ids, targets), k)[f"ndcg_at_{k}"]
            if ndcg > best[2]:
                best = (fusion, float(weight), ndcg)
    return best


class BlendModel(Model):
    """Two member models (``[{"family": ..., "params": ...}, ...]``) fused into one ranking."""

    family = "blend"
    defaults: ClassVar[dict[str, Any]] = {"members": [], "weight": 0.5, "fusion": "rank", "depth": 200}
    explanation = "a blend: each member explains its own part"

    def __init__(self, seed: int = 0, **params: Any) -> None:
        super().__init__(seed, **params)
        from recommender.modeling.families import make_model

        members = self.params["members"]
        if len(members) != 2 or any(m.get("family") in (None, "blend") for m in members):
            raise ValueError('a blend has two members, e.g. [{"family": "sequential"}, {"family": "itemknn"}]')
        self.members = [make_model(m["family"], m.get("params"), seed) for m in members]
        if not 0.0 <= float(self.params["weight"]) <= 1.0:
            raise ValueError(f"blend weight must be within [0, 1], not {self.params['weight']!r}")
        if self.params["fusion"] not in FUSIONS:
            raise ValueError(f"blend fusion must be one of {FUSIONS}, not {self.params['fusion']!r}")

    @property
    def uses_order(self) -> bool:  # type: ignore[override]
        """True when a member reads the sequences."""
        return any(m.uses_order for m in self.members)

    @classmethod
    def of(cls, a: Model, b: Model, fusion: str, weight: float, seed: int = 0) -> BlendModel:
        """A blend of two already fitted models."""
        blend = cls(seed, members=[_spec(a), _spec(b)], fusion=fusion, weight=weight)
        blend.members = [a, b]
        return blend

    def fit(
        self,
        user_items: sp.csr_matrix,
        show_progress: bool = False,
        *,
        sequences: Sequences | None = None,
        validation: Validation | None = None,
        report: StepFn = silent,
    ) -> None:
        """Fit both members."""
        for member in self.members:
            report(f"blend member {member.family}")
            member.fit(user_items, show_progress, sequences=sequences, validation=validation, report=report)

    def sequence_part(self) -> tuple[Model, float] | None:
        """The member that reads the order, with its weight."""
        weight = float(self.params["weight"])
        for member, share in zip(self.members, (weight, 1.0 - weight), strict=True):
            if member.sequence_part() is not None:
                return member, share
        return None

    def refitted(
        self, user_items: sp.csr_matrix, *, sequences: Sequences | None = None, report: StepFn = silent
    ) -> Model:
        """Both members refitted, fused as before."""
        a, b = (m.refitted(user_items, sequences=sequences, report=report) for m in self.members)
        return BlendModel.of(a, b, str(self.params["fusion"]), float(self.params["weight"]), self.seed)

    @property
    def history(self) -> list[dict[str, float]]:
        """The learning curve of a member that has one."""
        return next((list(getattr(m, "history", [])) for m in self.members if getattr(m, "history", None)), [])

    def _fused(self, a: Lists, b: Lists, n: int) -> Lists:
        return fuse(a, b, float(self.params["weight"]), str(self.params["fusion"]), n)

    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, *, sequences: Sequences | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both members' top ``depth``, fused."""
        depth = max(n, int(self.params["depth"]))
        a, b = (m.recommend(users, user_items, depth, sequences=sequences) for m in self.members)
        return self._fused(a, b, n)

    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Both members' similar items, fused the same way."""
        a, b = (m.similar_items(items, n) for m in self.members)
        return self._fused(a, b, n)

    def explain(
        self, user: int, user_items: sp.csr_matrix, item: int, n: int = 10, *, sequences: Sequences | None = None
    ) -> list[tuple[int, float]]:
        """The first member's explanation that has one."""
        for member in self.members:
            found = member.explain(user, user_items, item, n, sequences=sequences)
            if found:
                return found
        return []

    def affinity(
        self, users: np.ndarray, user_items: sp.csr_matrix, cols: np.ndarray, *, sequences: Sequences | None = None
    ) -> np.ndarray | None:
        """The members' affinities as z-scores over ``users`` (all of them, in one call), weighed as the blend
        weighs its members."""
        weight = float(self.params["weight"])
        parts = [
            (share, m.affinity(users, user_items, cols, sequences=sequences))
            for m, share in zip(self.members, (weight, 1.0 - weight), strict=True)
        ]
        known = [(share, (a - a.mean()) / (a.std() or 1.0)) for share, a in parts if a is not None]
        return sum(share * z for share, z in known) if known else None

    def because(self, users: np.ndarray, user_items: sp.csr_matrix, ids: np.ndarray) -> np.ndarray | None:
        """The first member's past item behind each one, the second's where the first has none."""
        out = None
        for member in self.members:
            found = member.because(users, user_items, ids)
            if found is not None:
                out = found if out is None else np.where(out >= 0, out, found)
        return out

    def _save_state(self, folder: Path) -> None:
        for i, member in enumerate(self.members):
            member.save(folder / f"member_{i}")

    def _load_state(self, folder: Path) -> None:
        from recommender.modeling.families import load_model

        self.members = [load_model(folder / f"member_{i}") for i in range(len(self.members))]


def _spec(model: Model) -> dict[str, Any]:
    return {"family": model.family, "params": model.params}
