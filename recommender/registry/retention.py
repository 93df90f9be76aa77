"""What the model registry still holds of forgotten users, and the retention that deletes it.

A registered version's bundle holds every user it was trained on (its vocabulary, the user x item
matrix), and its run's evaluation tables hold them per user. Publishing never serves a forgotten user
again (:mod:`recommender.registry.publish`), but the files exist until the version is deleted:
:func:`holding` says which versions hold whom, and :func:`purge` deletes every version older than
``RECSYS_FORGET_MODEL_RETENTION_DAYS`` that holds a forgotten user, its run and their artifacts, except
production and the rollback target.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from recommender.config import Settings
from recommender.registry.promotion import drop_from_history, protected_versions
from recommender.registry.tracking import BUNDLE_PATH, client, tmp_dir


def holding(settings: Settings, users: Collection[str]) -> dict[str, list[str]]:
    """Registered version -> which of ``users`` (pseudonyms) its bundle holds; versions holding none are left out.

    Reads each version's user vocabulary only (``users.json``), not the whole bundle.
    """
    wanted = set(users)
    if not wanted:
        return {}
    found: dict[str, list[str]] = {}
    for mv in client(settings).search_model_versions(f"name = '{settings.model_name}'"):
        held = wanted.intersection(_users_of(settings, str(mv.version)) or ())
        if held:
            found[str(mv.version)] = sorted(held)
    return dict(sorted(found.items(), key=lambda kv: int(kv[0])))


def _users_of(settings: Settings, version: str) -> list[str] | None:
    """The pseudonyms a registered version's bundle holds (None: it cannot be read now, or it has no bundle)."""
    with tempfile.TemporaryDirectory(dir=tmp_dir(settings)) as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{settings.model_name}/{version}/{BUNDLE_PATH}/users.json", dst_path=tmp
            )
        except (MlflowException, OSError):
            return None
        return list(json.loads(Path(path).read_text()))


HOLDS_TAG = "recsys.holds_forgotten"
CHECKED_TAG = "recsys.forgotten_checked_at"
"""A version's vocabulary never changes and tombstones are only added: once a version holds a forgotten user it
always will, and one that held none as of a tombstone time need be checked against newer tombstones only."""


def holding_forgotten(settings: Settings, forgotten: Mapping[str, float]) -> list[str]:
    """The registered versions holding any ``forgotten`` pseudonym (-> when it was tombstoned, unix seconds).

    Remembered on each version as tags, so an hourly pass reads a version's vocabulary only when a user was
    forgotten since its last check, and only against those users."""
    if not forgotten:
        return []
    c, name = client(settings), settings.model_name
    newest = max(forgotten.values())
    found = []
    for mv in c.search_model_versions(f"name = '{name}'"):
        version, tags = str(mv.version), dict(mv.tags or {})
        checked = float(tags.get(CHECKED_TAG, "-inf"))
        # a version whose vocabulary cannot be read now keeps its tags, and is read again on the next pass
        if tags.get(HOLDS_TAG) != "true" and checked < newest and (users := _users_of(settings, version)) is not None:
            holds = bool({u for u, at in forgotten.items() if at > checked}.intersection(users))
            c.set_model_version_tag(name, version, HOLDS_TAG, str(holds).lower())
            c.set_model_version_tag(name, version, CHECKED_TAG, repr(newest))
            tags[HOLDS_TAG] = str(holds).lower()
        if tags.get(HOLDS_TAG) == "true":
            found.append(version)
    return sorted(found, key=int)


@dataclass
class Purged:
    """What a retention pass did."""

    deleted: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    """Version -> why it stays (production, the rollback target, younger than the retention)."""

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def purge(settings: Settings, forgotten: Mapping[str, float], now: datetime | None = None) -> Purged:
    """Delete every registered version holding any ``forgotten`` pseudonym (-> its tombstone time) and older than
    the retention: the version, its logged model's and its run's artifacts, the run. Production and the
    rollback target stay."""
    c, name = client(settings), settings.model_name
    now = now or datetime.now(UTC)
    protected = protected_versions(c, name)
    out = Purged()
    for version in holding_forgotten(settings, forgotten):
        mv = c.get_model_version(name, version)
        age_days = (now.timestamp() * 1000 - int(mv.creation_timestamp)) / 86_400_000
        if version in protected:
            out.kept[version] = protected[version]
        elif age_days < settings.forget_model_retention_days:
            out.kept[version] = (
                f"{age_days:.1f} days old, under the retention of {settings.forget_model_retention_days}"
            )
        else:
            _delete(c, name, version)
            out.deleted.append(version)
    if out.deleted:
        drop_from_history(c, name, out.deleted)  # a later rollback never targets a deleted version
    return out


def _delete(c: mlflow.MlflowClient, name: str, version: str) -> None:
    """Its files first (the logged model's artifacts, the run's evaluation tables per user), the version last: a
    failure midway leaves the version registered, so the next pass finds it again."""
    mv = c.get_model_version(name, version)
    model_id = logged_model_id(mv)
    if model_id:
        get_artifact_repository(c.get_logged_model(model_id).artifact_location).delete_artifacts()
    if mv.run_id:
        get_artifact_repository(c.get_run(mv.run_id).info.artifact_uri).delete_artifacts()
    c.delete_model_version(name, version)
    if model_id:
        c.delete_logged_model(model_id)
    if mv.run_id:
        c.delete_run(mv.run_id)


def logged_model_id(mv: ModelVersion) -> str | None:
    """The logged model a version was registered from (``models:/m-...``; some stores leave ``model_id`` empty)."""
    source = str(mv.source or "")
    return getattr(mv, "model_id", None) or (source.rsplit("/", 1)[-1] if source.startswith("models:/m-") else None)
