"""The right to be forgotten: remove a person from Redis at once, then from the store for good.

1. Redis (immediately, also from the API's ``DELETE /v1/users/{id}``): the user's precomputed
   lists in every kept version and their entries in the event stream.
2. A tombstone in the Iceberg ``tombstones`` table: later ingests drop the user's late events,
   and training skips them even on a snapshot older than the deletion.
3. The store: their rows leave ``events`` and ``quarantine``; every older snapshot is expired
   and the data files no remaining snapshot references are deleted, so time travel cannot
   bring them back. The next trained and published model therefore holds no vector for them.

Requests made through the API are queued in ``{prefix}:forget:pending`` and completed by the
``forget_user`` DAG (or ``recsys forget --pending``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from recommender.config import Settings
from recommender.keys import Keys
from recommender.privacy import pseudonymize
from recommender.redis_conn import connect

if TYPE_CHECKING:
    from recommender.store import Store

STREAM_SCAN = 10_000


@dataclass
class ForgetReport:
    """What was removed where, for one user."""

    user_id: str  # the pseudonym (the raw id is never kept)
    redis_lists: int = 0
    stream_entries: int = 0
    store: dict[str, int] = field(default_factory=dict)
    tombstoned: bool = False

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def forget_in_redis(r: redis.Redis, keys: Keys, user: str) -> tuple[int, int]:
    """Delete a pseudonym's lists in every version, their session and stream entries; returns (keys, entries)."""
    versions = {str(v) for v in r.lrange(keys.versions, 0, -1)} | {str(v) for v in r.smembers(keys.started)}
    lists = int(r.delete(keys.session(user), *[keys.user(v, user) for v in versions]))
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
    """The API's part: Redis now, the store later (queued for the ``forget_user`` DAG)."""
    lists, entries = forget_in_redis(r, keys, user)
    r.sadd(keys.forget_pending, user)
    return ForgetReport(user, lists, entries)


def _open_store(settings: Settings) -> Store:
    from recommender.store import Store  # here, not at the top: the API imports this module without pyiceberg

    return Store(settings)


def forget_pseudonym(settings: Settings, user: str, store: Store | None = None) -> ForgetReport:
    """Everything for one pseudonym: tombstone first (so no ingest re-adds them), Redis, then the store."""
    store = store or _open_store(settings)
    store.add_tombstone(user)
    keys = Keys(settings.redis_prefix)
    with connect(settings) as r:
        lists, entries = forget_in_redis(r, keys, user)
        report = ForgetReport(user, lists, entries, store.delete_user(user), tombstoned=True)
        r.srem(keys.forget_pending, user)
    return report


def forget_user(settings: Settings, raw_user_id: str) -> ForgetReport:
    """``recsys forget USER_ID``: the raw id in, hashed as at ingest."""
    return forget_pseudonym(settings, pseudonymize(raw_user_id, settings.hmac_secret.get_secret_value()))


def forget_pending(settings: Settings) -> list[ForgetReport]:
    """Complete every deletion requested through the API."""
    with connect(settings) as r:
        pending = sorted(str(u) for u in r.smembers(Keys(settings.redis_prefix).forget_pending))
    store = _open_store(settings)
    return [forget_pseudonym(settings, user, store) for user in pending]
