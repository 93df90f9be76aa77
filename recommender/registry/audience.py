"""Audiences: the users most likely to engage with an item, a category or an attribute value, for a promotion
or a restock mail.

The production model scores every user it knows for the target's items as it scores items when it ranks them
(:meth:`Model.affinity`): a factor model (ALS, BPR) the user vectors against the items' mean vector, item-KNN
the items' score from each user's history (weight x similarity), the sequential family the user's newest
hidden state against the items' mean embedding, a blend its members' standardized scores weighed as it weighs
them. The popular family scores every user alike, so it has no audience. Users who already interacted with
the target's items in the model's training data are left out unless ``include_known``; users tombstoned or
queued for forgetting always are.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis

from recommender.config import Settings
from recommender.data.store import Store
from recommender.modeling.bundle import Bundle
from recommender.online.audiences import (
    AudienceError,
    Stored,
    Target,
    drop_stale,
    forget_in_audiences,
    mark_checked,
    store_audience,
    wanted,
)
from recommender.online.keys import Keys
from recommender.online.redis_conn import connect
from recommender.progress import ProgressFn, no_progress
from recommender.registry.publish import forgotten
from recommender.registry.tracking import PRODUCTION, load_bundle


@dataclass(frozen=True)
class Audience:
    """The top users (pseudonyms) with their scores, best first."""

    target: str
    model_version: str
    family: str
    items: int
    """The target's items the model knows."""
    users: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


__all__ = ["Audience", "AudienceError", "Target", "audience", "refresh_audiences"]


def target_items(catalog: pa.Table, target: Target) -> list[str]:
    """The catalog's items of a category or an attribute value (an item: itself)."""
    if target.item is not None:
        return [target.item]
    rows = catalog
    if target.category is not None:
        return rows.filter(pc.equal(rows.column("category"), target.category)).column("item_id").to_pylist()
    key, text = target.attribute  # type: ignore[misc]
    wanted = _typed(text)
    out = []
    for item, attributes in zip(rows.column("item_id").to_pylist(), rows.column("attributes").to_pylist(), strict=True):
        held = (json.loads(attributes) if attributes else {}).get(key)
        values = held if isinstance(held, list) else [held]
        if any(v is not None and (v == wanted or str(v) == text) for v in values):
            out.append(item)
    return out


def _typed(text: str) -> object:
    """A command line's value as the catalog's JSON holds it: ``true`` a boolean, ``2`` a number, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def rank_audience(
    bundle: Bundle, cols: np.ndarray, top: int, include_known: bool, forgotten: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` user rows by the model's affinity for ``cols``, best first, and their scores."""
    users = np.arange(bundle.user_items.shape[0])
    scores = bundle.model.affinity(users, bundle.user_items, cols, sequences=bundle.sequences)
    if scores is None:
        raise AudienceError(f"the {bundle.model.family} model scores every user alike: it has no audience")
    scores = np.asarray(scores, dtype=np.float64).copy()
    if not include_known:
        scores[np.asarray(bundle.user_items[:, cols].sum(axis=1)).ravel() > 0] = -np.inf
    if forgotten:
        rows = bundle.vocab.user_rows(sorted(forgotten))
        scores[rows[rows >= 0]] = -np.inf
    count = min(top, int(np.isfinite(scores).sum()))
    order = np.argsort(-scores, kind="stable")[:count]  # ties by row, at the cut too: the same audience every time
    return order, scores[order]


def ranked(
    bundle: Bundle, version: str, catalog: pa.Table, target: Target, top: int, include_known: bool, gone: set[str]
) -> Audience:
    """The ``top`` users ``bundle`` (model version ``version``) scores highest for ``target``, without ``gone``."""
    wanted = target_items(catalog, target)
    cols = bundle.vocab.item_cols(wanted) if wanted else np.zeros(0, dtype=np.int64)
    cols = cols[cols >= 0]
    if not len(cols):
        raise AudienceError(f"no item of {target.label} is in model version {version} (new items have no audience)")
    rows, scores = rank_audience(bundle, cols, top, include_known, gone)
    users = [str(u) for u in bundle.vocab.users[rows]]
    return Audience(target.label, version, bundle.model.family, len(cols), users, np.round(scores, 6).tolist())


def audience(
    settings: Settings, target: Target, top: int = 100, include_known: bool = False, alias: str = PRODUCTION
) -> Audience:
    """The ``top`` users the model holding ``alias`` scores highest for ``target``."""
    store = Store(settings)
    bundle, version = load_bundle(settings, alias)
    catalog = store.read_items() if target.item is None else pa.table({})
    with connect(settings) as r:  # tombstoned, or queued by DELETE /v1/users/{id} and not yet done
        gone = forgotten(r, Keys(settings.redis_prefix), settings)
    return ranked(bundle, version, catalog, target, top, include_known, set(gone))


def refresh_audiences(settings: Settings, progress: ProgressFn = no_progress) -> dict[str, object]:
    """Compute, for the served version, every audience ``GET /v1/audiences`` keeps that it lacks (or lacks at
    the size asked), and store it in Redis for the API; drop the targets nobody asked for in
    ``RECSYS_AUDIENCE_KEEP_DAYS``.

    The version is leased while this runs, so a publish's cleanup leaves it alone. An audience is served only
    once checked against the users forgotten while it was computed: at the end of the run, whatever ended it,
    or, for a run killed before that, by the next one (which removes every forgotten user from it first)."""
    keys = Keys(settings.redis_prefix)
    with connect(settings) as r:
        active = r.get(keys.active)
        if active is None:
            return {"skipped": "nothing is published yet"}
        version = str(active)
        r.set(keys.lease(version), "audiences", ex=settings.publish_lease_seconds)
        try:
            if not r.sismember(keys.started, version):  # cleaned up between the two reads: nothing to write to
                return {"skipped": f"version {version} was replaced meanwhile"}
            return _refresh(r, keys, settings, version, progress)
        finally:
            r.delete(keys.lease(version))


def _refresh(r: redis.Redis, keys: Keys, settings: Settings, version: str, progress: ProgressFn) -> dict[str, object]:
    model_version = str(r.hget(keys.meta(version), "model_version"))
    targets = wanted(r, keys)
    dropped = drop_stale(r, keys, targets, settings.audience_keep_days * 86_400)
    statuses = {str(k): st for k, v in r.hgetall(keys.audiences(version)).items() if (st := Stored.of(v))}
    todo = {
        label: top
        for label, (top, _) in sorted(targets.items())
        if label not in dropped and not ((held := statuses.get(label)) and held.covers(top))
    }
    unchecked = {label: s for label, s in statuses.items() if not s.checked and label not in todo}
    out: dict[str, object] = {"version": version, "model_version": model_version, "kept": len(targets) - len(dropped)}
    out |= {"computed": [], "failed": {}, "dropped": dropped, "swept": len(unchecked), "late_forgotten": 0}
    if not todo and not unchecked:
        return out
    gone = set(forgotten(r, keys, settings))
    for label in unchecked:  # stored by a run that ended before its check: remove whoever is forgotten now
        members = r.zrange(keys.audience(version, label), 0, -1)
        if held_gone := [m for m in members if m in gone]:
            r.zrem(keys.audience(version, label), *held_gone)
    mark_checked(r, keys, version, unchecked)
    if not todo:
        return out
    bundle, _ = load_bundle(settings, None, model_version)
    catalog = Store(settings).read_items()
    written: dict[str, Stored] = {}
    try:
        for k, (label, top) in enumerate(todo.items()):
            progress("audiences", k, len(todo))
            r.expire(keys.lease(version), settings.publish_lease_seconds)
            try:
                found = ranked(bundle, model_version, catalog, Target.parse(label), top, False, gone)
            except AudienceError as exc:
                out["failed"][label] = str(exc)  # type: ignore[index]
                status = Stored(top, 0, model_version, bundle.model.family, 0, time.time(), str(exc))
                store_audience(r, keys, version, label, status, [], [])
            else:
                status = Stored(top, len(found.users), model_version, found.family, found.items, time.time())
                store_audience(r, keys, version, label, status, found.users, found.scores)
                out["computed"].append(label)  # type: ignore[attr-defined]
            written[label] = status
        progress("audiences", len(todo), len(todo))
    finally:
        # a forget that came while this ran is queued or tombstoned now (it is queued before its own removal
        # runs), or it came after the statuses were written and removed its user from them itself
        late = set(forgotten(r, keys, settings)) - gone
        out["late_forgotten"] = forget_in_audiences(r, keys, [version], late)
        mark_checked(r, keys, version, written)
    return out
