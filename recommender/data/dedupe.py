"""Compact key sets for deduplication: a 16-byte digest per key instead of the key itself.

An ingest checks every row's ``event_id`` (or ``quarantine_id``) against the keys the table
already holds and the keys it has staged itself. Holding those keys as Python or Arrow strings
grows with the table and the file; holding their 128-bit MurmurHash3 digests in sorted NumPy
arrays costs 16 bytes a key (20M keys: 320 MB) and a binary search per lookup. The digests are
seeded from the HMAC secret, so nobody can precompute keys that collide; for honest keys a
collision (which would drop a row as a duplicate) has a probability near 2^-128 per pair.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import mmh3
import numpy as np
import pyarrow as pa

MERGE_AFTER = 8
"""Sorted parts kept apart before they are merged into one (a lookup searches every part)."""
SEALED_KEYS = 1 << 23
"""A part this large (8M keys, 128 MB) is merged no more: a merge's peak (both parts and the result) stays
under ~0.5 GB however many keys the set holds, for a few more parts to search."""


def seed_of(secret: str) -> int:
    """A 32-bit MurmurHash3 seed derived from the HMAC secret."""
    return int.from_bytes(hashlib.blake2b(b"dedupe:" + secret.encode(), digest_size=4).digest(), "little")


def digests(keys: pa.Array | pa.ChunkedArray | Iterable[str | None], seed: int) -> np.ndarray:
    """The 128-bit digest of each key as a row of two uint64 (a missing key digests like the empty string)."""
    values = keys.to_pylist() if isinstance(keys, pa.Array | pa.ChunkedArray) else list(keys)
    joined = b"".join([mmh3.hash_bytes(v or "", seed) for v in values])
    return np.frombuffer(joined, dtype="<u8").reshape(-1, 2)


def first_occurrences(d: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct digest, in their original order."""
    if not len(d):
        return np.arange(0)
    order = np.argsort(d[:, 0], kind="stable")  # equal high words stay in their original order
    high, low = d[order, 0], d[order, 1]
    same_high = high[1:] == high[:-1]
    keep = np.concatenate([[True], ~(same_high & (low[1:] == low[:-1]))])
    for run in _runs(same_high & (low[1:] != low[:-1]), same_high):  # two keys share 64 bits: ~never
        seen: set[int] = set()
        for at in run:
            keep[at] = int(low[at]) not in seen
            seen.add(int(low[at]))
    return np.sort(order[keep])


def _runs(mixed: np.ndarray, same: np.ndarray) -> list[range]:
    """The runs of equal high words (positions in sorted order) that hold more than one low word."""
    runs = []
    for at in np.flatnonzero(mixed):
        lo = at
        while lo > 0 and same[lo - 1]:
            lo -= 1
        hi = at + 1
        while hi < len(same) and same[hi]:
            hi += 1
        runs.append(range(lo, hi + 1))
    return runs


class KeySet:
    """A growing set of digests, kept as a few parts sorted by high word: a lookup is a binary search on the
    high words (plain uint64) and a comparison of the low word where they match."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(high) for high, _ in self._parts)

    def add(self, d: np.ndarray) -> None:
        """Add digests (duplicates of members are harmless)."""
        if len(d):
            self._parts.append(_by_high(d[:, 0], d[:, 1]))
        sealed = [p for p in self._parts if len(p[0]) >= SEALED_KEYS]
        open_ = sorted((p for p in self._parts if len(p[0]) < SEALED_KEYS), key=lambda part: len(part[0]))
        if len(open_) > MERGE_AFTER:  # the small parts sorted together, then merged into the largest open one
            largest = open_.pop()
            small = _by_high(np.concatenate([h for h, _ in open_]), np.concatenate([lo for _, lo in open_]))
            self._parts = [*sealed, _merged(largest, small)]

    def contains_high(self, d: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``d`` share a member's high word (for :func:`recommender.data.ingest.exact`
        digests: the same key, at any time; two keys share 64 bits with a probability near 2^-64)."""
        found = np.zeros(len(d), dtype=bool)
        for high, _ in self._parts:  # never empty: add() keeps no empty part
            found |= high[np.minimum(np.searchsorted(high, d[:, 0]), len(high) - 1)] == d[:, 0]
        return found

    def contains(self, d: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``d`` are members."""
        order = np.argsort(d[:, 0])  # sorted queries: each binary search starts where the last one ended
        q_high, q_low = d[order, 0], d[order, 1]
        found = np.zeros(len(d), dtype=bool)
        for high, low in self._parts:
            left = np.searchsorted(high, q_high, side="left")
            right = np.searchsorted(high, q_high, side="right")
            single = right - left == 1
            found[single] |= low[left[single]] == q_low[single]
            for q in np.flatnonzero(right - left > 1):  # equal high words in the set: compare every low word
                found[q] |= bool((low[left[q] : right[q]] == q_low[q]).any())
        out = np.empty(len(d), dtype=bool)
        out[order] = found
        return out


def _merged(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two parts sorted by high word as one, without sorting again: each of ``b`` goes where it belongs in ``a``
    (what the merge holds at its peak: both parts and the result, 32 bytes a key, and no sort index)."""
    at = np.searchsorted(a[0], b[0], side="right") + np.arange(len(b[0]))
    keep = np.ones(len(a[0]) + len(b[0]), dtype=bool)
    keep[at] = False
    high, low = np.empty(len(keep), dtype=np.uint64), np.empty(len(keep), dtype=np.uint64)
    high[at], low[at] = b
    high[keep], low[keep] = a
    return high, low


def _by_high(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(high, kind="stable")
    return np.ascontiguousarray(high[order]), np.ascontiguousarray(low[order])
