"""A content model for new items: catalog attributes in, a ranking of items no one has bought yet out.

Features come from the catalog as tokens (:func:`item_tokens`): the category, a price bucket, the
words of the title and of every other attribute (``brand:acme``, ``tags=12``). scikit-learn's
``TfidfVectorizer`` weighs them (idf over the catalog, rows L2-normalized).

Two rankings of candidates for a user with a history of (warm) items:

* :func:`tfidf_profile`: the plain baseline, cosine of each candidate's TF-IDF vector with the
  recency-weighted (``0.7^age``) sum of the history's;
* :class:`ContentTower`: a two-tower model trained on the warm items' sequences (JAX). The user
  tower is the recency-weighted mean of the history items' id and token embeddings; the item tower
  is the candidate's token embeddings alone, plus a learned bias per token, so an item with
  attributes and no interactions has a place. A full softmax over the warm items teaches it which
  attributes follow which (brand loyalty, a conditioner after a shampoo), which the plain profile
  cannot see. It is the content score served (blending in the profile scored worse on test).

:func:`cold_split`, :func:`hit_rate` and :func:`cold_figures` are the new-items protocol of docs/quality.md;
:func:`fit_content` evaluates and fits the :class:`ContentModel` each training publishes with its version.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from recommender.data.content import TokenWeights, item_tokens

DECAY = 0.7
"""Weight of a history item per step back (the last one weighs 1)."""


@dataclass(frozen=True)
class Features:
    """The rows' content, fitted once: their tokens, scikit-learn's TF-IDF matrix of them, the vocabulary and
    idf as :class:`TokenWeights`, and each row's heaviest tokens as the tower reads them."""

    tokens: list[list[str]]
    content: sp.csr_matrix
    weights: TokenWeights
    padded: tuple[np.ndarray, np.ndarray]


def features(rows: Sequence[Mapping[str, Any]], max_tokens: int) -> Features:
    """:class:`Features` of ``rows`` (one ``TfidfVectorizer`` fit: idf over the catalog, rows L2-normalized)."""
    tokens = [item_tokens(r) for r in rows]
    fitted = TfidfVectorizer(analyzer=lambda row: row, lowercase=False)
    content = sp.csr_matrix(fitted.fit_transform(tokens))
    vocabulary = {str(t): int(i) for t, i in fitted.vocabulary_.items()}
    weights = TokenWeights(vocabulary, np.asarray(fitted.idf_, dtype=np.float64), max_tokens)
    return Features(tokens, content, weights, weights.padded(tokens))


def content_matrix(rows: Sequence[Mapping[str, Any]]) -> sp.csr_matrix:
    """Items x tokens, TF-IDF weighted and L2-normalized (scikit-learn), one row per catalog row."""
    return features(rows, 1).content


def token_weights(rows: Sequence[Mapping[str, Any]], max_tokens: int) -> TokenWeights:
    """The rows' token vocabulary and idf (scikit-learn's), keeping each row's ``max_tokens`` heaviest tokens."""
    return features(rows, max_tokens).weights


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
        tokens: tuple[np.ndarray, np.ndarray],
        n_tokens: int,
        sequences: Iterable[Sequence[int]],
        candidates: np.ndarray,
        config: TowerConfig | None = None,
    ) -> ContentTower:
        """Train on next-item prediction over ``sequences`` (item rows, in time order), softmax over ``candidates``
        (the warm items: the ones the sequences may hold). ``tokens``: every item row's (index, weight) arrays
        (:meth:`TokenWeights.padded`), ``n_tokens`` wide in the vocabulary.

        The softmax runs over every item row with the others masked, and batches have one size (a smaller
        set is drawn with replacement), so each training of one catalog compiles one step: the new-items
        evaluation and the fit on everything share it.
        """
        import jax
        import jax.numpy as jnp

        cfg = config or TowerConfig()
        index, weight = tokens
        n_items = index.shape[0]
        histories, targets = _examples(sequences, cfg.max_history)
        allowed = np.zeros(n_items, dtype=bool)
        allowed[candidates] = True
        if not allowed[targets].all():
            raise ValueError("a sequence holds an item outside the candidates")
        keys = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
        params = {
            "user_tokens": jax.random.normal(keys[0], (n_tokens, cfg.dim)) * 0.05,
            "item_tokens": jax.random.normal(keys[1], (n_tokens, cfg.dim)) * 0.05,
            "ids": jax.random.normal(keys[2], (n_items, cfg.dim)) * 0.05,
            "bias": jnp.zeros(n_tokens),
        }
        optimizer, step = _trainer(cfg.learning_rate, cfg.weight_decay)
        state = optimizer.init(params)
        fixed = (jnp.asarray(index), jnp.asarray(weight), jnp.asarray(allowed), jnp.asarray(_weights(cfg.max_history)))
        mask = (histories >= 0).astype(np.float32)
        hist = np.maximum(histories, 0)
        order = np.random.default_rng(cfg.seed)
        n = len(targets)
        for _ in range(cfg.epochs if n else 0):
            perm = order.permutation(n) if n >= cfg.batch else order.choice(n, cfg.batch)
            for lo in range(0, len(perm) - cfg.batch + 1, cfg.batch):
                b = perm[lo : lo + cfg.batch]
                params, state = step(params, state, *fixed, hist[b], mask[b], targets[b])
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

    def tastes(self, sequences: Sequence[Sequence[int]], batch: int = 10_000) -> np.ndarray:
        """:meth:`user_vector` of every sequence (zeros for an empty one), as float16 rows, in batches."""
        reps = self._embed(self.user_tokens, np.arange(len(self.ids))) + self.ids
        recency = _weights(self.config.max_history).astype(np.float32)
        width = self.config.max_history
        out = np.zeros((len(sequences), self.ids.shape[1]), dtype=np.float16)
        for lo in range(0, len(sequences), batch):
            part = sequences[lo : lo + batch]
            hist = np.full((len(part), width), -1, dtype=np.int64)
            for r, seq in enumerate(part):
                tail = list(seq[-width:])
                hist[r, width - len(tail) :] = tail
            w = recency * (hist >= 0)
            vectors = (reps[np.maximum(hist, 0)] * w[..., None]).sum(1) / np.maximum(w.sum(1, keepdims=True), 1e-6)
            out[lo : lo + len(part)] = vectors
        return out

    def scores(self, history: Sequence[int], candidates: np.ndarray) -> np.ndarray:
        """The tower's score of each candidate for a user with ``history``."""
        vectors, bias = self.item_vectors(candidates)
        return np.asarray(vectors @ self.user_vector(history) + bias)


@functools.cache
def _trainer(learning_rate: float, weight_decay: float) -> tuple[Any, Any]:
    """The optimizer and the jitted training step (one per process and setting: compiled once per shape)."""
    import jax
    import jax.numpy as jnp
    import optax

    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def embed(table: Any, tok: Any, wt: Any, items: Any) -> Any:
        return (table[tok[items]] * wt[items][..., None]).sum(-2)

    def loss(p: Any, tok: Any, wt: Any, allowed: Any, recency: Any, hist: Any, mask: Any, y: Any) -> Any:
        every = jnp.arange(tok.shape[0])  # every item's two sides once (the softmax needs every item's anyway)
        reps = embed(p["user_tokens"], tok, wt, every) + p["ids"]
        w = recency * mask
        user = (reps[hist] * w[..., None]).sum(1) / jnp.maximum(w.sum(1, keepdims=True), 1e-6)
        logits = user @ embed(p["item_tokens"], tok, wt, every).T + (p["bias"][tok] * (wt > 0)).sum(-1)
        logits = jnp.where(allowed, logits, -1e9)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p: Any, s: Any, tok: Any, wt: Any, allowed: Any, recency: Any, hist: Any, mask: Any, y: Any) -> Any:
        grads = jax.grad(loss)(p, tok, wt, allowed, recency, hist, mask, y)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    return optimizer, step


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


COLD_RANKINGS = ("random", "attribute_popularity", "profile", "tower")
"""The rankings of the new-items protocol, compared in one run: the tower is the one served."""


def cold_figures(
    rows: Sequence[Mapping[str, Any]],
    sequences: Sequence[Sequence[int]],
    k: int = 10,
    seed: int = 0,
    config: TowerConfig | None = None,
    fitted: Features | None = None,
) -> dict[str, float]:
    """The new-items protocol of docs/quality.md on item ``rows`` and users' ``sequences`` (row indices, in
    time order): HR and NDCG at ``k`` of each of :data:`COLD_RANKINGS`, as flat metrics (``cold_*``).
    ``fitted``: the rows' :func:`features`, when the caller has them."""
    cfg = config or TowerConfig()
    split = cold_split([s for s in sequences if len(s)], len(rows), seed=seed)
    out: dict[str, float] = {"cold_users": float(len(split.targets)), "cold_items": float(len(split.new))}
    names = {name: f"cold_{name}" for name in COLD_RANKINGS}
    if not len(split.targets) or not len(split.warm):
        return out | {f"{m}_{kind}_at_{k}": 0.0 for m in names.values() for kind in ("hr", "ndcg")}
    fitted = fitted or features(rows, cfg.max_tokens)
    content = fitted.content
    tower = ContentTower.fit(
        fitted.padded, len(fitted.weights.vocabulary), [t for t in split.train if len(t) > 1], split.warm, cfg
    )
    trained = np.concatenate([np.asarray(t, dtype=np.int64) for t in split.train])
    popularity = attribute_popularity(content, np.bincount(trained, minlength=len(rows)).astype(float), split.new)
    position = {int(item): p for p, item in enumerate(split.new)}
    found: dict[str, list[tuple[int, float]]] = {name: [] for name in COLD_RANKINGS}
    ties = {name: np.random.default_rng(seed) for name in COLD_RANKINGS}  # one tie-break stream per ranking
    draw = np.random.default_rng(seed + 1)
    for history, target in zip(split.histories, split.targets, strict=True):
        scores = {
            "random": draw.random(len(split.new)),
            "attribute_popularity": popularity,
            "profile": tfidf_profile(content, history, split.new),
            "tower": tower.scores(history, split.new),
        }
        for name, values in scores.items():
            found[name].append(hit_rate(values, position[int(target)], k, rng=ties[name]))
    for name, hits in found.items():
        hr, ndcg = np.mean(hits, axis=0)
        out[f"{names[name]}_hr_at_{k}"], out[f"{names[name]}_ndcg_at_{k}"] = float(hr), float(ndcg)
    return out


@dataclass
class ContentModel:
    """The content model a version is published with: the token weights, the trained towers, each user's taste
    (the user tower over their history), and its new-items figures."""

    weights: TokenWeights
    tower: ContentTower
    taste: np.ndarray
    """Users x dim (float16): the user side of the tower over each user's last items."""
    metrics: dict[str, float] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write into ``folder`` (``content.npz``, ``content.json``)."""
        folder.mkdir(parents=True, exist_ok=True)
        t = self.tower
        np.savez(
            folder / "content.npz",
            idf=self.weights.idf,
            user_tokens=t.user_tokens,
            item_tokens=t.item_tokens,
            ids=t.ids,
            bias=t.bias,
            token_index=t.token_index,
            token_weight=t.token_weight,
            taste=self.taste,
        )
        vocabulary = sorted(self.weights.vocabulary, key=self.weights.vocabulary.__getitem__)
        meta = {"tokens": vocabulary, "config": asdict(t.config), "metrics": self.metrics}
        (folder / "content.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> ContentModel:
        """Read what :meth:`save` wrote."""
        meta = json.loads((folder / "content.json").read_text())
        config = TowerConfig(**meta["config"])
        with np.load(folder / "content.npz") as a:
            arrays = {k: a[k] for k in a.files}
        weights = TokenWeights({t: i for i, t in enumerate(meta["tokens"])}, arrays.pop("idf"), config.max_tokens)
        taste = arrays.pop("taste")
        return cls(weights, ContentTower(**arrays, config=config), taste, meta["metrics"])


def fit_content(
    rows: Sequence[Mapping[str, Any]],
    sequences: Sequence[Sequence[int]],
    k: int = 10,
    seed: int = 0,
    config: TowerConfig | None = None,
) -> ContentModel | None:
    """Evaluate (:func:`cold_figures`) and fit the content model on item ``rows`` and every user's ``sequences``
    (row indices); None when no row has any content. The rows of items with events come first, in the order
    of the model's item columns."""
    cfg = config or TowerConfig(seed=seed)
    if not any(item_tokens(r) for r in rows):
        return None
    fitted = features(rows, cfg.max_tokens)
    metrics = cold_figures(rows, sequences, k, seed, cfg, fitted)
    seen = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] + [np.zeros(0, np.int64)]))
    training = [s for s in sequences if len(s) > 1]
    tower = ContentTower.fit(fitted.padded, len(fitted.weights.vocabulary), training, seen, cfg)
    return ContentModel(fitted.weights, tower, tower.tastes(sequences), metrics)
