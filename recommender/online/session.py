"""Real-time session signals: what a user just did changes their next answer.

``POST /v1/events`` keeps each user's most recent items in ``{prefix}:session:{pseudonym}``
(a short JSON list, newest first, with a TTL). A recommendation request reads it with the
user's precomputed list in the same ``MGET``; when it is not empty, the similar-items lists of
those items are blended with the precomputed list by weighted reciprocal-rank fusion (the most
recent item weighs most) and the items just interacted with are left out.
"""

from __future__ import annotations

from collections.abc import Iterable

RRF_K = 60.0
"""Reciprocal-rank fusion constant: item r of a list scores weight / (RRF_K + r)."""


def updated_session(current: list[str], new_items: Iterable[str], keep: int) -> list[str]:
    """``new_items`` (oldest first) pushed in front of ``current`` (newest first), distinct, at most ``keep``."""
    merged = list(reversed(list(new_items))) + current
    return list(dict.fromkeys(merged))[:keep]


def blend(
    base: tuple[list[str], list[float]],
    similar: list[tuple[list[str], list[float]]],
    recent: list[str],
    session_weight: float = 1.0,
    decay: float = 0.5,
) -> tuple[list[str], list[float]]:
    """Fuse the precomputed list with the similar lists of ``recent`` items (newest first)."""
    scores: dict[str, float] = {}
    weighted = [(base[0], 1.0)] + [(ids, session_weight * decay**i) for i, (ids, _) in enumerate(similar)]
    for ids, weight in weighted:
        for rank, item in enumerate(ids):
            scores[item] = scores.get(item, 0.0) + weight / (RRF_K + rank)
    for item in recent:
        scores.pop(item, None)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return [i for i, _ in ranked], [round(s, 6) for _, s in ranked]
