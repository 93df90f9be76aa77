"""Reading published lists back from Redis (the CLI's view; the API has an async twin)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from recommender.online.keys import Keys, decode


@dataclass(frozen=True)
class Lookup:
    """A list as served: items, scores, where it came from, which published version."""

    items: list[str]
    scores: list[float]
    source: str  # personalized | popular | similar | none
    version: str | None


def active_version(r: redis.Redis, keys: Keys) -> str | None:
    """The published version readers should use, if any."""
    version = r.get(keys.active)
    return None if version is None else str(version)


def model_version_of(r: redis.Redis, keys: Keys, version: str | None) -> str | None:
    """The registry model version a published version holds (None for no version)."""
    value = r.hget(keys.meta(version), "model_version") if version else None
    return None if value is None else str(value)


def user_recommendations(r: redis.Redis, keys: Keys, user_id: str, n: int) -> Lookup:
    """Top-n for a pseudonymized user id; popular items for an unknown user."""
    version = active_version(r, keys)
    if version is None:
        return Lookup([], [], "none", None)
    items, scores = decode(r.get(keys.user(version, user_id)))
    if items:
        return Lookup(items[:n], scores[:n], "personalized", version)
    items, scores = decode(r.get(keys.popular(version)))
    return Lookup(items[:n], scores[:n], "popular", version)


def similar_items(r: redis.Redis, keys: Keys, item_id: str, n: int) -> Lookup:
    """Items similar to ``item_id`` in the active version."""
    version = active_version(r, keys)
    if version is None:
        return Lookup([], [], "none", None)
    items, scores = decode(r.get(keys.similar(version, item_id)))
    return Lookup(items[:n], scores[:n], "similar" if items else "none", version)
