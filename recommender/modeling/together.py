"""Frequently bought together, and bought again: what the cart and buy-again placements show.

Both are counts over the interactions, computed at training and published with the version:

* **baskets**: a user's cart and purchase events with no gap longer than ``GAP_SECONDS`` between
  them (a session; all events when a shop records neither). Two items in one basket co-occur;
  ``together`` ranks item b for item a by ``co(a, b) / sqrt(baskets with b)``, so that the
  items in every basket do not crowd out the ones bought *with a*;
* **repurchase intervals**: the median time between two purchases of one category by one user;
  ``buy again`` offers the items of a category whose interval has passed since the last one.

Pure numpy and scipy over what it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recommender.modeling.matrix import Interactions

GAP_SECONDS = 1800.0
BASKET_TYPES = ("add_to_cart", "purchase")
MAX_BASKET = 50
MIN_REPURCHASES = 3


@dataclass(frozen=True)
class Baskets:
    """Baskets as rows of a basket x item 0/1 matrix, with each basket's user and first item."""

    matrix: sp.csr_matrix
    user: np.ndarray
    first: np.ndarray


def baskets(inter: Interactions, gap: float = GAP_SECONDS) -> Baskets:
    """Group cart and purchase events (every event if there are none) into baskets of 2+ items."""
    codes = [inter.event_types.index(t) for t in BASKET_TYPES if t in inter.event_types]
    mask = np.isin(inter.event_type, codes) if codes else np.ones(len(inter), dtype=bool)
    user, item, ts = inter.user[mask], inter.item[mask], inter.ts[mask]
    order = np.lexsort((ts, user))
    user, item, ts = user[order], item[order], ts[order]
    starts = np.r_[True, (user[1:] != user[:-1]) | (np.diff(ts) > gap)] if len(user) else np.zeros(0, bool)
    basket = np.cumsum(starts) - 1
    n_items = len(inter.vocab.items)
    matrix = sp.csr_matrix((np.ones(len(item), np.float32), (basket, item)), shape=(int(starts.sum()), n_items))
    matrix.data[:] = 1.0  # an item twice in a basket counts once
    sizes = np.diff(matrix.indptr)
    keep = (sizes >= 2) & (sizes <= MAX_BASKET)
    first_item = item[starts]
    return Baskets(matrix[keep], user[starts][keep], first_item[keep])


def together(matrix: sp.csr_matrix, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` items bought together with each item: (ids, scores), -1 / 0 where fewer."""
    n_items = matrix.shape[1]
    co = (matrix.T @ matrix).tocsr().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    freq = np.asarray(matrix.sum(axis=0)).ravel()
    co = co @ sp.diags(1.0 / np.sqrt(np.maximum(freq, 1.0)).astype(np.float32))
    co = sp.csr_matrix(co)
    ids = np.full((n_items, n), -1, dtype=np.int64)
    scores = np.zeros((n_items, n), dtype=np.float32)
    for row in range(n_items):
        lo, hi = co.indptr[row], co.indptr[row + 1]
        if lo == hi:
            continue
        cols, vals = co.indices[lo:hi], co.data[lo:hi]
        top = np.lexsort((cols, -vals))[:n]  # best first, ties by item
        ids[row, : len(top)], scores[row, : len(top)] = cols[top], vals[top]
    return ids, scores


def evaluate_together(found: Baskets, n: int = 10) -> dict[str, float]:
    """Hit rate at ``n`` of ``together`` against the popularity baseline, on each user's last basket.

    The last basket of every user with more than one is held out; from the rest, the basket's
    first item must bring up any of its other items among ``n``.
    """
    _, inverse, counts = np.unique(found.user, return_inverse=True, return_counts=True)
    last = np.r_[found.user[1:] != found.user[:-1], True] if len(found.user) else np.zeros(0, bool)
    held = last & (counts[inverse] > 1)  # baskets are in user order, then time
    if not held.any():
        return {"together_hr": 0.0, "together_popular_hr": 0.0, "together_baskets": 0.0}
    train = found.matrix[~held]
    ids, _ = together(train, n)
    popular = np.argsort(-np.asarray(train.sum(axis=0)).ravel(), kind="stable")[: n + 1]
    hits = base = 0
    test = found.matrix[held]
    for row, query in enumerate(found.first[held]):
        targets = set(test.indices[test.indptr[row] : test.indptr[row + 1]].tolist()) - {int(query)}
        mine = [i for i in ids[query].tolist() if i >= 0]
        hits += bool(targets & set(mine))
        base += bool(targets & set([p for p in popular.tolist() if p != query][:n]))
    count = int(held.sum())
    return {"together_hr": hits / count, "together_popular_hr": base / count, "together_baskets": float(count)}


def repurchase_intervals(inter: Interactions, category: np.ndarray) -> dict[str, float]:
    """Median seconds between two purchases of one category by one user, per category with enough of them.

    ``category`` holds each item column's category ("" when unknown).
    """
    if "purchase" not in inter.event_types:
        return {}
    mask = inter.event_type == inter.event_types.index("purchase")
    cats = category[inter.item[mask]]
    user, ts = inter.user[mask], inter.ts[mask]
    known = cats != ""
    user, ts, cats = user[known], ts[known], cats[known]
    order = np.lexsort((ts, cats, user))
    user, ts, cats = user[order], ts[order], cats[order]
    same = (user[1:] == user[:-1]) & (cats[1:] == cats[:-1])
    gaps, of = np.diff(ts)[same], cats[1:][same]
    out = {}
    for name in np.unique(of):
        values = gaps[(of == name) & (gaps > 3600)]  # the same order counted twice is not a repurchase
        if len(values) >= MIN_REPURCHASES:
            out[str(name)] = float(np.median(values))
    return out


def last_purchases(inter: Interactions) -> sp.csr_matrix:
    """User x item matrix of each user's last purchase time of each item (unix seconds)."""
    n_users, n_items = inter.shape
    if "purchase" not in inter.event_types:
        return sp.csr_matrix((n_users, n_items), dtype=np.float64)
    mask = inter.event_type == inter.event_types.index("purchase")
    user, item, ts = inter.user[mask], inter.item[mask], inter.ts[mask]
    order = np.lexsort((ts, item, user))
    user, item, ts = user[order], item[order], ts[order]
    latest = np.r_[(user[1:] != user[:-1]) | (item[1:] != item[:-1]), True] if len(user) else np.zeros(0, bool)
    return sp.csr_matrix((ts[latest], (user[latest], item[latest])), shape=(n_users, n_items))
