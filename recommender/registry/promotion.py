"""Promotion through registry aliases (candidate -> staging -> production) behind a quality gate.

The gate, on the way to production: the version's validation metric must beat the
popularity baseline of its own run, and must not fall below the current production
version's by more than ``RECSYS_GATE_TOLERANCE`` (relative). The decision and its reason
are written as model-version tags; ``force`` overrides and is recorded as such.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recommender.config import Settings
from recommender.registry.tracking import CANDIDATE, PRODUCTION, STAGING, client

HISTORY_TAG = "production_history"
TARGETS = (STAGING, PRODUCTION)


@dataclass(frozen=True)
class Decision:
    """What a promotion did and why."""

    version: str
    to: str
    decision: str  # passed | refused | held | forced | moved | rolled_back
    reason: str
    previous: str | None

    @property
    def promoted(self) -> bool:
        """True when the alias now points at ``version``."""
        return self.decision not in ("refused", "held")

    def to_dict(self) -> dict[str, object]:
        """Plain fields plus ``promoted``."""
        return {**asdict(self), "promoted": self.promoted}


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    """The version holding ``alias``, or None."""
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _metric(c: MlflowClient, name: str, version: str, key: str) -> float:
    run_id = c.get_model_version(name, version).run_id
    if run_id is None:
        raise LookupError(f"version {version} has no run: register versions with `recsys train`")
    metrics = c.get_run(run_id).data.metrics
    if key not in metrics:
        raise LookupError(f"version {version} has no metric {key!r}; was it trained by `recsys train`?")
    return float(metrics[key])


def gate(settings: Settings, c: MlflowClient, version: str, production: str | None) -> tuple[bool, str]:
    """Apply the quality gate to ``version``; returns (passed, reason)."""
    name, metric = settings.model_name, settings.gate_metric
    value = _metric(c, name, version, f"val_{metric}")
    baseline = _metric(c, name, version, f"baseline_val_{metric}")
    if value <= baseline:
        return False, f"val_{metric} {value:.4f} does not beat the popularity baseline {baseline:.4f}"
    if production is None or production == version:
        return True, f"val_{metric} {value:.4f} > baseline {baseline:.4f}; no other production version"
    current = _metric(c, name, production, f"val_{metric}")
    floor = current * (1.0 - settings.gate_tolerance)
    if value < floor:
        return False, (
            f"val_{metric} {value:.4f} is below production v{production}'s {current:.4f} "
            f"by more than the {settings.gate_tolerance:.0%} tolerance (floor {floor:.4f})"
        )
    return True, (
        f"val_{metric} {value:.4f} > baseline {baseline:.4f} and within "
        f"{settings.gate_tolerance:.0%} of production v{production} ({current:.4f})"
    )


def _history(c: MlflowClient, name: str) -> list[str]:
    try:
        tags = c.get_registered_model(name).tags
    except MlflowException:
        return []  # nothing registered yet
    return list(json.loads(tags.get(HISTORY_TAG, "[]")))


def protected_versions(c: MlflowClient, name: str) -> dict[str, str]:
    """Versions a retention never deletes, with why: production, and the version a rollback goes back to."""
    current = alias_version(c, name, PRODUCTION)
    if current is None:
        return {}
    earlier = [v for v in _history(c, name) if v != current]
    return {current: "production", **({earlier[-1]: "the rollback target"} if earlier else {})}


def drop_from_history(c: MlflowClient, name: str, versions: list[str]) -> None:
    """Take deleted ``versions`` out of production's history (what rollbacks go back along)."""
    history = _history(c, name)
    kept = [v for v in history if v not in set(versions)]
    if kept != history:
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(kept))


def _tag(c: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)


def promote(
    settings: Settings, to: str, version: str | None = None, force: bool = False, reason: str | None = None
) -> Decision:
    """Move ``to`` (staging or production) to ``version`` (default: staging's, else candidate's)."""
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {', '.join(TARGETS)}")
    if force and not reason:
        raise ValueError("--force needs --reason TEXT: overrides are recorded")
    c, name = client(settings), settings.model_name
    source = (CANDIDATE,) if to == STAGING else (STAGING, CANDIDATE)
    version = version or next((v for a in source if (v := alias_version(c, name, a))), None)
    if version is None:
        raise LookupError(f"no version to promote: nothing holds {' or '.join(source)}; run `recsys train` first")
    c.get_model_version(name, version)  # raises a clear MLflow error for an unknown version
    previous = alias_version(c, name, to)
    now = datetime.now(UTC).isoformat()
    if to == STAGING:
        c.set_registered_model_alias(name, STAGING, version)
        _tag(c, name, version, {"staged_at": now})
        return Decision(version, to, "moved", "staged for the production gate", previous)
    passed, why = gate(settings, c, version, previous)
    decision = "passed" if passed else ("forced" if force else "refused")
    if force and not passed:
        why = f"forced: {reason} (gate said: {why})"
    _tag(c, name, version, {"gate_decision": decision, "gate_reason": why, "gate_checked_at": now})
    if decision == "refused":
        return Decision(version, to, decision, why, previous)
    c.set_registered_model_alias(name, PRODUCTION, version)
    history = [v for v in _history(c, name) if v != version] + [version]
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-20:]))
    _tag(c, name, version, {"promoted_to_production_at": now, **({"forced_reason": str(reason)} if force else {})})
    return Decision(version, to, decision, why, previous)


def rollback(settings: Settings, reason: str = "manual rollback") -> Decision:
    """Point ``production`` back at the version that held it before the current one."""
    c, name = client(settings), settings.model_name
    history = _history(c, name)
    current = alias_version(c, name, PRODUCTION)
    if current is None or len(history) < 2:
        raise LookupError("no previous production version to roll back to")
    history = [v for v in history if v != current]
    target = history[-1]
    c.set_registered_model_alias(name, PRODUCTION, target)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    now = datetime.now(UTC).isoformat()
    _tag(c, name, current, {"rolled_back_at": now, "rolled_back_reason": reason})
    return Decision(target, PRODUCTION, "rolled_back", f"{reason}: v{current} -> v{target}", current)
