"""The right to be forgotten: remove a person from Redis at once, then from the store for good.

1. Redis (immediately, also from the API's ``DELETE /v1/users/{id}``): the user's precomputed
   lists in every kept version and their entries in the event stream.
2. A tombstone in the Iceberg ``tombstones`` table: later ingests drop the user's late events,
   and training skips them even on a snapshot older than the deletion.
3. The store: their rows leave ``events`` and ``quarantine``; every older snapshot is expired
   and the data files no remaining snapshot references are deleted, so time travel cannot
   bring them back. The next trained and published model therefore holds no vector for them.

Step 1 is :mod:`recommender.online.erasure` (the API runs it); requests made through the API are
queued in ``{prefix}:forget:pending`` and completed here by the ``forget_user`` DAG (or
``recsys forget --pending``). Each report names the registered model versions that still hold the
pseudonym; :func:`purge_forgotten_models` (the DAG's second task, ``recsys forget --purge-models``)
deletes those past the retention.
"""

from __future__ import annotations

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.online.erasure import ForgetReport, forget_in_redis
from recommender.online.keys import Keys
from recommender.online.redis_conn import connect
from recommender.registry.retention import Purged, holding, purge


def forget_pseudonym(settings: Settings, user: str, store: Store | None = None) -> ForgetReport:
    """Everything for one pseudonym: tombstone first (so no ingest re-adds them), Redis, then the store."""
    store = store or Store(settings)
    store.add_tombstone(user)
    keys = Keys(settings.redis_prefix)
    with connect(settings) as r:
        lists, entries = forget_in_redis(r, keys, user)
        report = ForgetReport(user, lists, entries, store.delete_user(user), tombstoned=True)
        r.srem(keys.forget_pending, user)
    return report


def forget_user(settings: Settings, raw_user_id: str) -> ForgetReport:
    """``recsys forget USER_ID``: the raw id in, hashed as at ingest."""
    user = pseudonymize(raw_user_id, settings.hmac_secret.get_secret_value())
    return with_model_versions(settings, [forget_pseudonym(settings, user)])[0]


def forget_pending(settings: Settings) -> list[ForgetReport]:
    """Complete every deletion requested through the API."""
    with connect(settings) as r:
        pending = sorted(str(u) for u in r.smembers(Keys(settings.redis_prefix).forget_pending))
    store = Store(settings)
    return with_model_versions(settings, [forget_pseudonym(settings, user, store) for user in pending])


def with_model_versions(settings: Settings, reports: list[ForgetReport]) -> list[ForgetReport]:
    """Each report with the registered versions that still hold its pseudonym (one pass over the registry)."""
    held = holding(settings, [r.user_id for r in reports])
    for report in reports:
        report.model_versions = [version for version, users in held.items() if report.user_id in users]
    return reports


def purge_forgotten_models(settings: Settings) -> Purged:
    """The retention: delete the registered versions older than ``RECSYS_FORGET_MODEL_RETENTION_DAYS`` that
    hold any forgotten user (tombstoned), with their runs and files; production and the rollback target stay."""
    return purge(settings, Store(settings).tombstone_times())
