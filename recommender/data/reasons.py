"""Why an item is shown: the one past item of the user behind it (numpy only: publishing and the API share it).

A reason is a small mapping, ``{"kind": "similar_to", "item_id": "i42"}``. Its kinds:

* ``similar_to``: a personalized item, or an item on a product page; ``item_id`` is the past item that
  contributed most (publishing computes it per family) or the page's item;
* ``session``: an item the user's session brought in; ``item_id`` is the session item behind it;
* ``bought_together``: an item bought with ``item_id`` in the cart;
* ``buy_again``: an item the user bought, due again;
* ``popular``, ``new`` (the content model placed it), ``explore`` (an exploration slot), ``pinned`` and
  ``promoted`` (a merchandising rule).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Kind = Literal[
    "similar_to", "session", "bought_together", "buy_again", "popular", "new", "explore", "pinned", "promoted"
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
Reason = dict[str, str]


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def nearest(units: np.ndarray, history: np.ndarray, ids: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each user row and recommended column in ``ids`` (users x n, -1 for none), the column of ``history``
    (users x h, -1 padded) nearest to it by the cosine of ``units`` (unit rows); -1 where either is missing."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    for lo in range(0, len(ids), chunk):
        past, shown = history[lo : lo + chunk], ids[lo : lo + chunk]
        if not past.shape[1] or not shown.shape[1]:
            continue
        closeness = units[np.maximum(shown, 0)] @ units[np.maximum(past, 0)].transpose(0, 2, 1)  # users x n x h
        closeness[np.broadcast_to((past < 0)[:, None, :], closeness.shape)] = -np.inf
        best = closeness.argmax(axis=2)
        found = np.take_along_axis(past, best, axis=1)
        known = np.any(past >= 0, axis=1)
        out[lo : lo + chunk] = np.where((shown >= 0) & known[:, None], found, -1)
    return out
