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

DIGEST = np.dtype("S16")
MERGE_AFTER = 8
"""Sorted parts kept apart before they are merged into one (a lookup searches every part)."""


def seed_of(secret: str) -> int:
    """A 32-bit MurmurHash3 seed derived from the HMAC secret."""
    return int.from_bytes(hashlib.blake2b(b"dedupe:" + secret.encode(), digest_size=4).digest(), "little")


def digests(keys: pa.Array | pa.ChunkedArray | Iterable[str | None], seed: int) -> np.ndarray:
    """The 16-byte digest of each key (a missing key digests like the empty string)."""
    values = keys.to_pylist() if isinstance(keys, pa.Array | pa.ChunkedArray) else list(keys)
    joined = b"".join([mmh3.hash_bytes(v or "", seed) for v in values])
    return np.frombuffer(joined, dtype=DIGEST)


def first_occurrences(d: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct digest, in their original order."""
    _, first = np.unique(d, return_index=True)
    return np.sort(first)


class KeySet:
    """A growing set of digests, kept as a few sorted arrays."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(p) for p in self._parts)

    def add(self, d: np.ndarray) -> None:
        """Add digests (duplicates of members are harmless)."""
        if len(d):
            self._parts.append(np.sort(d))
        if len(self._parts) > MERGE_AFTER:
            self._parts = [np.unique(np.concatenate(self._parts))]

    def contains(self, d: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``d`` are members."""
        found = np.zeros(len(d), dtype=bool)
        for part in self._parts:
            at = np.minimum(np.searchsorted(part, d), len(part) - 1)
            found |= part[at] == d
        return found
