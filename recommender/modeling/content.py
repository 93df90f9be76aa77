"""A content model for new items: catalog attributes in, a ranking of items no one has bought yet out.

Features come from the catalog as tokens (:func:`item_tokens`): the category, a price bucket, the
words of the title and of every other attribute (``brand=acme``, ``tags:12``). scikit-learn's
``TfidfVectorizer`` weighs them (idf over the catalog, rows L2-normalized).

Two rankings of candidates for a user with a history of (warm) items:

* :func:`tfidf_profile`: the plain baseline, cosine of each candidate's TF-IDF vector with the
  recency-weighted (``0.7^age``) sum of the history's;
* :class:`ContentTower`: a two-tower model trained on the warm items' sequences (JAX). The user
  tower is the recency-weighted mean of the history items' id and token embeddings; the item tower
  is the candidate's token embeddings alone, plus a learned bias per token, so an item with
  attributes and no interactions has a place. A full softmax over the warm items teaches it which
  attributes follow which (brand loyalty, a conditioner after a shampoo), which the plain profile
  cannot see. Its score is blended with the profile's (z-scores per user, :data:`PROFILE_WEIGHT`).

:func:`cold_split` and :func:`hit_rate` are the new-items protocol of docs/quality.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

DECAY = 0.7
"""Weight of a history item per step back (the last one weighs 1)."""
PROFILE_WEIGHT = 0.5
"""The plain profile's share in the blended score (chosen on the validation split, docs/quality.md)."""
PRICE_EDGES = (5, 10, 20, 50, 100, 200, 500)


def item_tokens(row: Mapping[str, Any]) -> list[str]:
    """The content tokens of one catalog row: category, price bucket, title words, every attribute's words."""
    tokens = []
    if row.get("category"):
        tokens.append(f"category={row['category']}")
    price = row.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool) and math.isfinite(price):
        tokens.append(f"price<{next((e for e in PRICE_EDGES if price < e), 'max')}")
    attributes = dict(row.get("attributes") or {})
    if row.get("title"):
        attributes["title"] = row["title"]
    for key, value in sorted(attributes.items()):
        values = value if isinstance(value, list) else [value]
        for v in values:
            tokens += [f"{key}:{word}" for word in str(v).lower().split()] if isinstance(v, str) else [f"{key}={v}"]
    return tokens


def content_matrix(rows: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
    """Items x tokens, TF-IDF weighted and L2-normalized (scikit-learn), one row per catalog row."""
    vectorizer = TfidfVectorizer(analyzer=lambda tokens: tokens, lowercase=False)
    return sp.csr_matrix(vectorizer.fit_transform([item_tokens(r) for r in rows]))


def _weights(n: int, decay: float = DECAY) -> np.ndarray:
    return np.asarray(decay ** np.arange(n)[::-1], dtype=np.float64)


def tfidf_profile(content: sp.csr_matrix, history: Sequence[int], candidates: np.ndarray) -> np.ndarray:
    """The plain baseline: each candidate's cosine with the recency-weighted TF-IDF profile of ``history``."""
    if not len(history):
        return np.zeros(len(candidates))
    profile = sp.csr_matrix(_weights(len(history))) @ content[list(history)]
    return np.asarray((content[candidates] @ profile.T).todense()).ravel()


def attribute_popularity(content: sp.csr_matrix, counts: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each candidate's tokens' popularity: the interactions of warm items carrying them (``counts`` per item)."""
    binary = (content > 0).astype(np.float64)
    per_token = binary.T @ counts
    return np.asarray(binary[candidates] @ per_token).ravel()


@dataclass(frozen=True)
class TowerConfig:
    """The content tower's training (defaults chosen on the validation split of docs/quality.md)."""

    dim: int = 64
    epochs: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    batch: int = 512
    max_history: int = 20
    max_tokens: int = 16
    seed: int = 0


@dataclass
class ContentTower:
    """The trained towers (numpy arrays): token embeddings for users and items, id embeddings, token biases."""

    user_tokens: np.ndarray
    item_tokens: np.ndarray
    ids: np.ndarray
    bias: np.ndarray
    token_index: np.ndarray
    token_weight: np.ndarray
    config: TowerConfig = field(default_factory=TowerConfig)

    @classmethod
    def fit(
        cls,
        content: sp.csr_matrix,
        sequences: Iterable[Sequence[int]],
        candidates: np.ndarray,
        config: TowerConfig | None = None,
    ) -> ContentTower:
        """Train on next-item prediction over ``sequences`` (item rows, in time order), softmax over ``candidates``
        (the warm items: the ones the sequences may hold)."""
        import jax
        import jax.numpy as jnp
        import optax

        cfg = config or TowerConfig()
        index, weight = _padded(content, cfg.max_tokens)
        histories, targets = _examples(sequences, cfg.max_history)
        position = np.full(content.shape[0], -1, dtype=np.int64)
        position[candidates] = np.arange(len(candidates))
        labels = position[targets]
        if (labels < 0).any():
            raise ValueError("a sequence holds an item outside the candidates")
        n_tokens, n_items = content.shape[1], content.shape[0]
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
        params = {
            "user_tokens": jax.random.normal(keys[0], (n_tokens, cfg.dim)) * 0.05,
            "item_tokens": jax.random.normal(keys[1], (n_tokens, cfg.dim)) * 0.05,
            "ids": jax.random.normal(keys[2], (n_items, cfg.dim)) * 0.05,
            "bias": jnp.zeros(n_tokens),
        }
        tok, wt = jnp.asarray(index), jnp.asarray(weight, dtype=jnp.float32)
        recency = jnp.asarray(_weights(cfg.max_history), dtype=jnp.float32)
        pool = jnp.asarray(candidates)

        def embed(table: Any, items: Any) -> Any:
            return (table[tok[items]] * wt[items][..., None]).sum(-2)

        def loss(p: Any, hist: Any, mask: Any, y: Any) -> Any:
            rep = embed(p["user_tokens"], hist) + p["ids"][hist]
            w = recency * mask
            user = (rep * w[..., None]).sum(1) / jnp.maximum(w.sum(1, keepdims=True), 1e-6)
            logits = user @ embed(p["item_tokens"], pool).T + (p["bias"][tok[pool]] * (wt[pool] > 0)).sum(-1)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        optimizer = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
        state = optimizer.init(params)

        @jax.jit
        def step(p: Any, s: Any, hist: Any, mask: Any, y: Any) -> Any:
            value, grads = jax.value_and_grad(loss)(p, hist, mask, y)
            updates, s = optimizer.update(grads, s, p)
            return optax.apply_updates(p, updates), s, value

        mask = (histories >= 0).astype(np.float32)
        hist = np.maximum(histories, 0)
        order = np.random.default_rng(cfg.seed)
        n = len(labels)
        for _ in range(cfg.epochs):
            perm = order.permutation(n)
            for lo in range(0, n - cfg.batch + 1, cfg.batch):
                b = perm[lo : lo + cfg.batch]
                params, state, _ = step(params, state, hist[b], mask[b], labels[b])
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        return cls(**arrays, token_index=index, token_weight=weight, config=cfg)

    def _embed(self, table: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray((table[self.token_index[items]] * self.token_weight[items][..., None]).sum(-2))

    def item_vectors(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate side: each item's token embedding and bias (what a new item gets from its attributes)."""
        bias = (self.bias[self.token_index[items]] * (self.token_weight[items] > 0)).sum(-1)
        return self._embed(self.item_tokens, items), bias

    def user_vector(self, history: Sequence[int]) -> np.ndarray:
        """User side: the recency-weighted mean of the last ``max_history`` history items' id and token embeddings."""
        items = np.asarray(list(history)[-self.config.max_history :], dtype=np.int64)
        if not len(items):
            return np.zeros(self.item_tokens.shape[1], dtype=np.float32)
        rep = self._embed(self.user_tokens, items) + self.ids[items]
        w = _weights(len(items))
        return np.asarray((rep * w[:, None]).sum(0) / w.sum(), dtype=np.float32)

    def scores(self, history: Sequence[int], candidates: np.ndarray) -> np.ndarray:
        """The tower's score of each candidate for a user with ``history``."""
        vectors, bias = self.item_vectors(candidates)
        return np.asarray(vectors @ self.user_vector(history) + bias)


def blended(tower: np.ndarray, profile: np.ndarray, weight: float = PROFILE_WEIGHT) -> np.ndarray:
    """The served content score: the tower's and the plain profile's z-scores over the candidates, blended."""
    return _z(tower) + weight * _z(profile)


def _z(values: np.ndarray) -> np.ndarray:
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


def _padded(content: sp.csr_matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``width`` heaviest tokens (at most: no wider than the row with most) as (index, weight) arrays,
    zero-padded."""
    width = max(1, min(width, int(np.diff(content.indptr).max(initial=0))))
    index = np.zeros((content.shape[0], width), dtype=np.int32)
    weight = np.zeros((content.shape[0], width), dtype=np.float32)
    for row in range(content.shape[0]):
        lo, hi = content.indptr[row], content.indptr[row + 1]
        cols, vals = content.indices[lo:hi], content.data[lo:hi]
        keep = np.argsort(-vals, kind="stable")[:width]
        index[row, : len(keep)], weight[row, : len(keep)] = cols[keep], vals[keep]
    return index, weight


def _examples(sequences: Iterable[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(left-padded history of at most ``width`` items, -1 as padding; next item) for every position past the first."""
    histories, targets = [], []
    for seq in sequences:
        for k in range(1, len(seq)):
            past = list(seq[max(0, k - width) : k])
            histories.append([-1] * (width - len(past)) + past)
            targets.append(seq[k])
    return np.asarray(histories, dtype=np.int64).reshape(-1, width), np.asarray(targets, dtype=np.int64)


@dataclass(frozen=True)
class ColdSplit:
    """The new-items protocol: ``new`` items (every interaction with them left out of training), the warm
    training sequences, and the users whose last item is new (their warm history, their target)."""

    new: np.ndarray
    warm: np.ndarray
    train: list[list[int]]
    histories: list[list[int]]
    targets: np.ndarray


def cold_split(sequences: Sequence[Sequence[int]], n_items: int, fraction: float = 0.1, seed: int = 0) -> ColdSplit:
    """A seeded ``fraction`` of the items seen in ``sequences`` becomes new. Training keeps every user's warm items
    but their last (each user's test item is held out); the test users are those whose last item is new."""
    seen = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]))
    chosen = np.random.default_rng(seed).choice(seen, size=round(fraction * len(seen)), replace=False)
    is_new = np.zeros(n_items, dtype=bool)
    is_new[chosen] = True
    train = [[int(i) for i in s[:-1] if not is_new[i]] for s in sequences]
    tested = [(list(t), int(s[-1])) for s, t in zip(sequences, train, strict=True) if is_new[s[-1]]]
    return ColdSplit(
        new=np.sort(chosen),
        warm=seen[~is_new[seen]],
        train=train,
        histories=[h for h, _ in tested],
        targets=np.asarray([t for _, t in tested], dtype=np.int64),
    )


def hit_rate(scores: np.ndarray, target: int, k: int = 10, rng: np.random.Generator | None = None) -> tuple[int, float]:
    """(hit, NDCG) at ``k`` of one user's ``target`` (an index into ``scores``); ties broken at random (seeded), so
    an item that shares its attributes with others does not gain from the order of the catalog."""
    rng = rng or np.random.default_rng(0)
    above = int((scores > scores[target]).sum())
    tied = int((scores == scores[target]).sum()) - 1
    rank = above + int(rng.integers(0, tied + 1))
    return (1, 1.0 / math.log2(rank + 2)) if rank < k else (0, 0.0)
