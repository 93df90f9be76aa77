"""Online experiments (champion/challenger): a deterministic user split and signed recommendation ids.

While ``{prefix}:challenger`` names a published version, the API serves it to the users whose
pseudonym falls in the first ``RECSYS_EXPERIMENT_SHARE`` of the hash space (the same users every
time, across workers and restarts) and production to everyone else, and records which users it
served which variant (``{prefix}:experiment:{id}:exposed:{version}``). Every answer carries a
``recommendation_id`` that says which model version served it on which placement, signed with a
key derived from the HMAC secret: shop events that carry it are attributed to that variant, and an
id the API did not issue is ignored. The analysis is :mod:`recommender.ops.experiment_report`.

This module is what the API process runs: nothing here imports the pipeline's dependencies.
"""

from __future__ import annotations

import hmac
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from recommender.online.keys import Keys

SIGNATURE_CHARS = 16
PLACEMENTS = ("home", "similar", "popular")
"""Where a list was shown: a user's recommendations, an item's similar items, the popular list."""


def in_challenger(pseudonym: str, share: float) -> bool:
    """Whether a (hex) pseudonym is in the challenger's share: uniform and stable, an HMAC is a hash."""
    return int(pseudonym[:8], 16) / 2**32 < share


class Exposures:
    """Impressions of an experiment, counted in the worker and written in one pipeline a round of its upkeep.

    An answer costs no round trip of its own for them (a second one per request, under load, was a
    fifth of the route's time). Counted at most once: a flush that fails is dropped, never sent again
    (Redis may have applied a pipeline whose reply was lost), so a Redis error or a worker killed
    outright loses what was counted since the last round; a worker that stops writes what it holds.
    Each round holds at most ``limit`` users per variant.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.served: Counter[tuple[str, str]] = Counter()
        self.users: dict[tuple[str, str], set[str]] = {}
        self.new_served: Counter[tuple[str, str]] = Counter()
        self.new_items: dict[tuple[str, str], set[str]] = {}

    def add(self, experiment_id: str, model_version: str, user: str, new_items: Sequence[str] = ()) -> None:
        """Count one answer of ``model_version`` to ``user``, and the new items it showed."""
        key = (experiment_id, model_version)
        self.served[key] += 1
        users = self.users.setdefault(key, set())
        if len(users) < self.limit:
            users.add(user)
        if new_items:
            self.new_served[key] += len(new_items)
            shown = self.new_items.setdefault(key, set())
            if len(shown) < self.limit:
                shown.update(new_items)

    async def flush(self, r: Any, keys: Keys) -> None:
        """Write what was counted since the last flush (dropped if the write fails: see the class)."""
        if not self.served:
            return
        served, users, new_served, new_items = self.served, self.users, self.new_served, self.new_items
        self.served, self.users, self.new_served, self.new_items = Counter(), {}, Counter(), {}
        pipe = r.pipeline(transaction=False)
        for (experiment_id, version), count in served.items():
            pipe.hincrby(keys.served(experiment_id), version, count)
        for (experiment_id, version), members in users.items():
            if members:
                pipe.sadd(keys.exposed(experiment_id, version), *members)
        for (experiment_id, version), count in new_served.items():
            pipe.hincrby(keys.new_served(experiment_id), version, count)
        for (experiment_id, version), items in new_items.items():
            pipe.sadd(keys.new_shown(experiment_id, version), *items)
        await pipe.execute()


@dataclass(frozen=True)
class Issued:
    """What a valid recommendation id says."""

    model_version: str
    placement: str


class RecommendationIds:
    """Issue and verify ``<model version>-<placement>-<96 random bits>-<signature>`` ids (the key is derived
    from the HMAC secret, never the secret itself)."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.digest(secret.encode(), b"recommendation-id", "sha256")

    def _sign(self, body: str) -> str:
        return hmac.digest(self._key, body.encode(), "sha256").hex()[:SIGNATURE_CHARS]

    def issue(self, model_version: str | None, placement: str) -> str:
        """A new id for a list that ``model_version`` served on ``placement``."""
        body = f"{model_version or 'none'}-{placement}-{os.urandom(12).hex()}"
        return f"{body}-{self._sign(body)}"

    def verify(self, recommendation_id: str | None) -> Issued | None:
        """What the id says, if this API issued it (None for a forged, altered or foreign id)."""
        if not recommendation_id or recommendation_id.count("-") != 3 or not recommendation_id.isascii():
            return None  # any text is safe to pass: a stored row of any characters is simply not ours
        body, _, signature = recommendation_id.rpartition("-")
        if not hmac.compare_digest(self._sign(body).encode(), signature.encode()):
            return None
        version, placement, _ = body.split("-")
        return Issued(version, placement)


def new_experiment_id() -> str:
    """A fresh experiment id (it names the experiment's Redis keys)."""
    return os.urandom(6).hex()


@dataclass(frozen=True)
class Experiment:
    """The running experiment: its id (naming its Redis keys), when it started, the challenger's published version."""

    id: str
    started_at: str
    challenger: str


def running_experiment(r: redis.Redis, keys: Keys) -> Experiment | None:
    """The experiment a published challenger runs, if any."""
    challenger, record = r.mget(keys.challenger, keys.experiment)
    return Experiment(**json.loads(record)) if challenger and record else None


def start_experiment(r: redis.Redis, keys: Keys, challenger: str) -> str | None:
    """Make published version ``challenger`` the challenger of a new experiment (its counts start at zero);
    returns the challenger it replaced. Both pointers change in one MULTI/EXEC (one cluster slot)."""
    old = running_experiment(r, keys)
    record = Experiment(new_experiment_id(), datetime.now(UTC).isoformat(), challenger)
    with r.pipeline(transaction=True) as pipe:
        pipe.get(keys.challenger)
        pipe.set(keys.challenger, challenger)
        pipe.set(keys.experiment, json.dumps(asdict(record)))
        previous = pipe.execute()[0]
    if old is not None:
        _drop(r, keys, old.id)
    return None if previous is None else str(previous)


def end_experiment(r: redis.Redis, keys: Keys) -> Experiment | None:
    """Stop serving the challenger and delete the experiment's counts; returns the experiment that ran."""
    current = running_experiment(r, keys)
    with r.pipeline(transaction=True) as pipe:
        pipe.delete(keys.challenger, keys.experiment)
        pipe.execute()
    if current is not None:
        _drop(r, keys, current.id)
    return current


def _drop(r: redis.Redis, keys: Keys, experiment_id: str) -> None:
    found = list(r.scan_iter(match=keys.experiment_data(experiment_id), count=1000))
    if found:
        r.unlink(*found)
