"""The right to be forgotten, the part that cannot wait: a person's data leaves Redis at once.

The API's ``DELETE /v1/users/{id}`` calls :func:`request_forget`: the user's precomputed lists in
every kept version, their place in its stored audiences, their session and their entries in the event stream
are deleted, and the pseudonym is queued in ``{prefix}:forget:pending`` for :mod:`recommender.ops.forget`,
which tombstones it and removes it from the store for good.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from recommender.online.audiences import forget_in_audiences
from recommender.online.experiments import running_experiment
from recommender.online.keys import Keys

STREAM_SCAN = 10_000


@dataclass
class ForgetReport:
    """What was removed where, for one user."""

    user_id: str  # the pseudonym (the raw id is never kept)
    redis_lists: int = 0
    stream_entries: int = 0
    store: dict[str, int] = field(default_factory=dict)
    tombstoned: bool = False
    model_versions: list[str] = field(default_factory=list)
    """Registered model versions whose bundle still holds the pseudonym (never served it again; deleted by the
    retention, ``RECSYS_FORGET_MODEL_RETENTION_DAYS``, unless production or the rollback target)."""

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def forget_in_redis(r: redis.Redis, keys: Keys, user: str) -> tuple[int, int]:
    """Delete a pseudonym's lists (recommended, bought, item sequence) in every version, their session, their
    cursors, their place in the stored audiences and the experiments' exposed sets and their stream entries;
    returns (keys and audience places, entries)."""
    versions = {str(v) for v in r.lrange(keys.versions, 0, -1)} | {str(v) for v in r.smembers(keys.started)}
    tokens = [str(t) for t in r.zrange(keys.cursors_of(user), 0, -1)]
    lists = int(
        r.delete(
            keys.session(user),
            keys.cursors_of(user),
            *[keys.cursor(t) for t in tokens],
            *[k for v in versions for k in keys.personal(v, user)],
        )
    ) + forget_in_audiences(r, keys, versions, [user])
    running = running_experiment(r, keys)
    if running is not None:  # only the running experiment keeps its served users (a new one drops the old ones')
        for version in versions:
            model_version = r.hget(keys.meta(version), "model_version")
            if model_version is not None:
                r.srem(keys.exposed(running.id, str(model_version)), user)
    entries, start = 0, "-"
    while True:
        batch: list[Any] = list(r.xrange(keys.events, min=start, max="+", count=STREAM_SCAN) or [])
        mine = [entry_id for entry_id, fields in batch if fields.get("user_id") == user]
        if mine:
            entries += int(r.xdel(keys.events, *mine))
        if len(batch) < STREAM_SCAN:
            return lists, entries
        start = "(" + str(batch[-1][0])


def request_forget(r: redis.Redis, keys: Keys, user: str) -> ForgetReport:
    """The API's part: Redis now, the store later (queued for the ``forget_user`` DAG).

    Queued first: a job that writes users' data (a publish, the audience job) and reads the queue after
    writing then sees the user, whichever of the two it writes before or after this deletion."""
    r.sadd(keys.forget_pending, user)
    lists, entries = forget_in_redis(r, keys, user)
    return ForgetReport(user, lists, entries)
