"""The past item behind each published recommendation, for whole batches of users (see
:mod:`recommender.data.reasons` for the reasons the API gives).

Per family: the nearest past item by the cosine of the item vectors (ALS and BPR factors, the sequential
model's item embeddings); for item-KNN the largest term of the score's sum, history weight x similarity.
A user's past items are their :data:`HISTORY` heaviest (the confidence matrix's largest weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

HISTORY = 50
"""Past items considered per user."""


def histories(users: np.ndarray, user_items: sp.csr_matrix, size: int = HISTORY) -> tuple[np.ndarray, np.ndarray]:
    """Each user's heaviest past item columns (users x ``size``, -1 padded) and their weights (0 padded)."""
    cols = np.full((len(users), size), -1, dtype=np.int64)
    weights = np.zeros((len(users), size), dtype=np.float32)
    indptr, indices, data = user_items.indptr, user_items.indices, user_items.data
    for r, user in enumerate(users):
        lo, hi = indptr[user], indptr[user + 1]
        row, w = indices[lo:hi], data[lo:hi]
        if hi - lo > size:
            keep = np.argsort(-w, kind="stable")[:size]
            row, w = row[keep], w[keep]
        cols[r, : len(row)], weights[r, : len(row)] = row, w
    return cols, weights


@dataclass(frozen=True)
class Packed:
    """An item-item similarity as sorted ``row x width + column`` keys with their values, for lookups in bulk."""

    keys: np.ndarray
    values: np.ndarray
    width: np.int64


def pack(similarity: sp.csr_matrix) -> Packed:
    """:class:`Packed` of ``similarity`` (once per fitted model: its size is the similarity's)."""
    matrix = sp.csr_matrix(similarity).copy()  # sorted here, not in the model
    matrix.sort_indices()
    width = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * width + matrix.indices
    return Packed(keys, matrix.data, width)


def top_contributor(
    similarity: sp.csr_matrix | Packed, history: np.ndarray, weights: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """For each user row and column of ``ids``, the past item with the largest ``weight x similarity[past, id]``
    (item-KNN's score is the sum of these terms); -1 where no past item has a positive term."""
    packed = similarity if isinstance(similarity, Packed) else pack(similarity)
    stored, width = packed.keys, packed.width
    out = np.full(ids.shape, -1, dtype=np.int64)
    if not len(stored):
        return out
    for lo in range(0, len(ids), 256):
        past, shown, w = history[lo : lo + 256], ids[lo : lo + 256], weights[lo : lo + 256]
        wanted = np.maximum(past, 0)[:, None, :] * width + np.maximum(shown, 0)[:, :, None]  # users x n x h
        at = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
        terms = np.where(stored[at] == wanted, packed.values[at], 0.0) * w[:, None, :]
        terms[np.broadcast_to((past < 0)[:, None, :], terms.shape)] = 0.0
        best = terms.argmax(axis=2)
        found = np.take_along_axis(past, best, axis=1)
        positive = np.take_along_axis(terms, best[:, :, None], axis=2)[:, :, 0] > 0
        out[lo : lo + 256] = np.where(positive & (shown >= 0), found, -1)
    return out
