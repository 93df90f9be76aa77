"""What a catalog row says about an item's content, as tokens, and their weights under a trained vocabulary.

Shared by training (which learns the vocabulary, with scikit-learn's ``TfidfVectorizer``), publishing and
the API (which encode rows the model never saw: an item added with ``PATCH /v1/items/{id}``). A row is
an item's details as published: ``title``, ``category``, ``price``, ``in_stock``, ``hidden`` and every
other attribute at the top level (``brand``, ``tags``, ...). Numpy only: the API process imports it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PRICE_EDGES = (5, 10, 20, 50, 100, 200, 500)
NOT_CONTENT = frozenset({"item_id", "in_stock", "hidden", "updated_at", "price", "category"})
"""Fields that are no attribute of their own (availability, the key; category and price have their own tokens)."""


def item_tokens(row: Mapping[str, Any]) -> list[str]:
    """The content tokens of one item's details: category, price bucket, the words of the title and of every
    other attribute (``brand:acme``), numbers as themselves (``tags=12``)."""
    tokens = []
    if row.get("category"):
        tokens.append(f"category={row['category']}")
    price = row.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool) and math.isfinite(price):
        tokens.append(f"price<{next((e for e in PRICE_EDGES if price < e), 'max')}")
    for key in sorted(k for k in row if k not in NOT_CONTENT):
        value = row[key]
        for v in value if isinstance(value, list) else [value]:
            if v is None or isinstance(v, bool | dict):
                continue
            tokens += [f"{key}:{word}" for word in str(v).lower().split()] if isinstance(v, str) else [f"{key}={v}"]
    return tokens


@dataclass(frozen=True)
class TokenWeights:
    """A trained token vocabulary and its idf: each row's heaviest ``max_tokens`` tokens, TF-IDF weighted.

    The weighting is scikit-learn's ``TfidfVectorizer`` default (raw counts times the smoothed idf, the
    row L2-normalized, unknown tokens ignored); ``tests/modeling/test_content.py`` checks both agree.
    """

    vocabulary: Mapping[str, int]
    idf: np.ndarray
    max_tokens: int

    def of(self, tokens: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(token indices, weights) of one row, heaviest first (ties by index), at most ``max_tokens``."""
        counts = Counter(self.vocabulary[t] for t in tokens if t in self.vocabulary)
        if not counts:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        index = np.fromiter(counts, dtype=np.int32, count=len(counts))
        weight = np.fromiter(counts.values(), dtype=np.float64, count=len(counts)) * self.idf[index]
        weight /= np.linalg.norm(weight)
        keep = np.lexsort((index, -weight))[: self.max_tokens]
        return index[keep], weight[keep].astype(np.float32)

    def padded(self, rows: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`of` for many rows (token lists) as (index, weight) arrays of ``max_tokens`` columns, zero-padded."""
        index = np.zeros((len(rows), self.max_tokens), dtype=np.int32)
        weight = np.zeros((len(rows), self.max_tokens), dtype=np.float32)
        for r, tokens in enumerate(rows):
            i, w = self.of(tokens)
            index[r, : len(i)], weight[r, : len(w)] = i, w
        return index, weight
