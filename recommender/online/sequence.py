"""The sequential model's forward pass in numpy, for the API (no JAX in the serving process).

Publishing stores the weights that :meth:`recommender.modeling.sequential.SequentialModel.export`
writes (one ``.npz`` blob per version, with the item ids and the blend weight) and each user's
newest items. When a user has session events, the API appends them to that sequence and
re-scores every item with this forward pass: the same computation as the trained network
(pre-norm blocks, causal attention, GELU), for one sequence at a time.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recommender.data.reasons import nearest, unit

NEG = -1e9
EPSILON = 1e-6


def _normalize(x: np.ndarray) -> np.ndarray:
    """Layer normalization without its scale and bias (those are folded into the next dense layer)."""
    average = np.full((x.shape[-1], 1), 1.0 / x.shape[-1], np.float32)  # a matmul: faster than mean()
    mean = x @ average
    var = np.maximum((x * x) @ average - mean * mean, 0.0)  # Flax's fast variance
    return (x - mean) / np.sqrt(var + EPSILON)


GELU_C = math.sqrt(2.0 / math.pi)
"""Python floats throughout: a numpy float64 scalar would turn the float32 arrays into float64 (NEP 50)."""


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x * x * x)))


@dataclass(frozen=True)
class _Block:
    """One transformer block's weights, prepared for one sequence: the query, key and value kernels in
    one matrix, each layer norm's scale and bias folded into the dense layer after it, and the
    attention's 1/sqrt(head size) folded into the query part."""

    qkv: np.ndarray
    qkv_bias: np.ndarray
    out: np.ndarray
    out_bias: np.ndarray
    ffn_in: np.ndarray
    ffn_in_bias: np.ndarray
    ffn_out: np.ndarray
    ffn_out_bias: np.ndarray

    @classmethod
    def of(cls, w: dict[str, np.ndarray], prefix: str, head_size: int) -> _Block:
        """Block ``prefix``'s prepared weights from the exported ones."""

        def folded(norm: str, kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scale, shift = w[f"{prefix}{norm}/scale"], w[f"{prefix}{norm}/bias"]
            return (scale[:, None] * kernel).astype(np.float32), (shift @ kernel + bias).astype(np.float32)

        def dense(name: str, factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
            return w[f"{prefix}{name}/kernel"] * factor, w[f"{prefix}{name}/bias"] * factor

        parts = [dense("q", 1.0 / math.sqrt(head_size)), dense("k"), dense("v")]
        qkv = folded("ln_att", np.concatenate([k for k, _ in parts], axis=1), np.concatenate([b for _, b in parts]))
        return cls(*qkv, *dense("o"), *folded("ln_ffn", *dense("ffn_in")), *dense("ffn_out"))


@dataclass(frozen=True)
class SequenceScorer:
    """Exported weights plus the item vocabulary: scores every item after a sequence of item ids."""

    weights: dict[str, np.ndarray]
    hidden: int
    heads: int
    blocks: int
    max_len: int
    items: list[str]
    weight: float
    """The sequential member's weight in a blend (1.0 for a sequential model)."""

    def __post_init__(self) -> None:
        size = self.hidden // self.heads
        prepared = [_Block.of(self.weights, f"block_{b}/", size) for b in range(self.blocks)]
        object.__setattr__(self, "_index", {item: i for i, item in enumerate(self.items)})
        object.__setattr__(self, "_blocks", prepared)
        object.__setattr__(self, "_mask", np.triu(np.full((self.max_len, self.max_len), NEG, np.float32), k=1))
        object.__setattr__(self, "_units", unit(self.weights["item_emb/embedding"][1:]))

    @classmethod
    def from_bytes(cls, blob: bytes) -> SequenceScorer:
        """Read the blob that publishing wrote."""
        with np.load(io.BytesIO(blob)) as arrays:
            weights = {k: arrays[k].astype(np.float32) for k in arrays.files if k not in ("config", "items")}
            config = json.loads(arrays["config"].tobytes())
            items = json.loads(arrays["items"].tobytes())
        return cls(
            weights, config["hidden"], config["heads"], config["blocks"], config["max_len"], items, config["weight"]
        )

    def columns(self, item_ids: list[str]) -> list[int]:
        """Item columns of the known ids, in order."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return [index[i] for i in item_ids if i in index]

    def encode(self, columns: list[int]) -> np.ndarray:
        """The hidden state after the newest of ``columns`` (oldest first; at most ``max_len`` are read).

        The last block computes only the newest position (the only one scored); the others need
        every position's keys and values.
        """
        w, cols = self.weights, np.asarray(columns[-self.max_len :], dtype=np.int64)
        length, heads, size, hidden = len(cols), self.heads, self.hidden // self.heads, self.hidden
        x = w["item_emb/embedding"][cols + 1] + w["pos_emb/embedding"][:length]
        blocks: list[_Block] = self._blocks  # type: ignore[attr-defined]
        for b, block in enumerate(blocks):
            qkv = (_normalize(x) @ block.qkv + block.qkv_bias).reshape(length, 3, heads, size).transpose(1, 2, 0, 3)
            q, k, v = qkv[0], qkv[1], qkv[2]  # heads x L x size
            if b == len(blocks) - 1:
                q, x = q[:, -1:], x[-1:]  # the newest position attends to every one: no mask
                att = q @ k.transpose(0, 2, 1)
            else:
                att = q @ k.transpose(0, 2, 1) + self._mask[:length, :length]  # type: ignore[attr-defined]
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            x = x + (att @ v).transpose(1, 0, 2).reshape(len(x), hidden) @ block.out + block.out_bias
            x = x + _gelu(_normalize(x) @ block.ffn_in + block.ffn_in_bias) @ block.ffn_out + block.ffn_out_bias
        return _normalize(x[-1]) * w["ln_out/scale"] + w["ln_out/bias"]

    def scores(self, columns: list[int]) -> np.ndarray:
        """Every item's score after ``columns``."""
        return self.weights["item_emb/embedding"][1:] @ self.encode(columns)

    def nearest(self, item_ids: list[str]) -> Callable[[str], str | None]:
        """Of the sequence ``item_ids`` (oldest first; its newest ``max_len``), the item nearest to a given one by the
        cosine of their embeddings (None for an item the model does not know)."""
        columns = self.columns(item_ids)[-self.max_len :]
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        history = np.asarray([columns], dtype=np.int64).reshape(1, -1)

        def of(item: str) -> str | None:
            col = index.get(item)
            if col is None or not columns:
                return None
            found = int(nearest(self._units, history, np.asarray([[col]], dtype=np.int64))[0, 0])  # type: ignore[attr-defined]
            return self.items[found] if found >= 0 else None

        return of

    def top(self, item_ids: list[str], n: int) -> tuple[list[str], list[float]]:
        """The ``n`` best items after the sequence ``item_ids`` (oldest first), none of them included."""
        columns = self.columns(item_ids)
        if not columns:
            return [], []
        scores = self.scores(columns)
        scores[columns] = NEG
        n = min(n, len(scores) - len(set(columns)))
        if n <= 0:
            return [], []
        top = np.argpartition(scores, -n)[-n:] if n < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]
        return [self.items[i] for i in top], scores[top].astype(np.float64).round(6).tolist()
