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
from dataclasses import dataclass

import numpy as np

NEG = -1e9
EPSILON = 1e-6


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.maximum((x * x).mean(axis=-1, keepdims=True) - mean * mean, 0.0)  # Flax's fast variance
    return (x - mean) / np.sqrt(var + EPSILON) * scale + bias


GELU_C = math.sqrt(2.0 / math.pi)
"""Python floats throughout: a numpy float64 scalar would turn the float32 arrays into float64 (NEP 50)."""


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * x * x * x)))


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
        object.__setattr__(self, "_index", {item: i for i, item in enumerate(self.items)})

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
        """The hidden state after the newest of ``columns`` (oldest first; at most ``max_len`` are read)."""
        w, cols = self.weights, np.asarray(columns[-self.max_len :], dtype=np.int64)
        length, heads, size = len(cols), self.heads, self.hidden // self.heads
        x = w["item_emb/embedding"][cols + 1] + w["pos_emb/embedding"][np.arange(length)]
        causal = np.tril(np.ones((length, length), dtype=bool))
        for b in range(self.blocks):

            def dense(h: np.ndarray, name: str, b: int = b) -> np.ndarray:
                return h @ w[f"block_{b}/{name}/kernel"] + w[f"block_{b}/{name}/bias"]

            h = _layer_norm(x, w[f"block_{b}/ln_att/scale"], w[f"block_{b}/ln_att/bias"])
            q, k, v = (dense(h, n).reshape(length, heads, size).transpose(1, 0, 2) for n in ("q", "k", "v"))
            att = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(size), NEG)  # heads x L x L
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            x = x + dense((att @ v).transpose(1, 0, 2).reshape(length, self.hidden), "o")
            h = _layer_norm(x, w[f"block_{b}/ln_ffn/scale"], w[f"block_{b}/ln_ffn/bias"])
            x = x + dense(_gelu(dense(h, "ffn_in")), "ffn_out")
        return _layer_norm(x[-1], w["ln_out/scale"], w["ln_out/bias"])

    def scores(self, columns: list[int]) -> np.ndarray:
        """Every item's score after ``columns``."""
        return self.weights["item_emb/embedding"][1:] @ self.encode(columns)

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
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]
        return [self.items[i] for i in top], [round(float(s), 6) for s in scores[top]]
