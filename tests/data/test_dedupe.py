"""Deduplication by 128-bit digests: exact, also when two keys share their first 64 bits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recommender.data.dedupe import KeySet, digests, first_occurrences, seed_of


def d(*pairs: tuple[int, int]) -> np.ndarray:
    return np.array(pairs, dtype=np.uint64).reshape(-1, 2)


def test_digests_are_stable_seeded_and_distinct() -> None:
    keys = pa.array(["e1", "e2", None, "e1"])
    one, again = digests(keys, 7), digests(["e1", "e2", "", "e1"], 7)
    assert one.shape == (4, 2) and (one == again).all()
    assert (one[0] == one[3]).all() and not (one[0] == one[1]).all()
    assert not (digests(keys, 8)[0] == one[0]).all()  # another secret, other digests
    assert seed_of("a") != seed_of("b") and 0 <= seed_of("a") < 2**32


def test_first_occurrences_keep_order_and_tell_keys_apart_that_share_a_high_word() -> None:
    assert first_occurrences(d((1, 1), (2, 2), (1, 1), (0, 5), (2, 2))).tolist() == [0, 1, 3]
    assert first_occurrences(d((5, 1), (5, 2), (5, 1), (5, 3), (5, 2))).tolist() == [0, 1, 3]
    assert first_occurrences(d()).tolist() == []


def test_membership_is_exact_across_parts_and_merges() -> None:
    keys = KeySet()
    for lo in range(0, 100, 10):  # more parts than are kept apart: they get merged
        keys.add(d(*[(k % 7, k) for k in range(lo, lo + 10)]))  # every high word shared by many keys
    assert len(keys) == 100
    probe = d((3, 3), (3, 4), (6, 97), (6, 98), (0, 100), (9, 1))
    assert keys.contains(probe).tolist() == [True, False, True, False, False, False]
    real = digests([f"e{k}" for k in range(1000)], 1)
    keys.add(real[:500])
    assert keys.contains(real).tolist() == [True] * 500 + [False] * 500
