"""The steps the Airflow DAGs run: plain values in, JSON-able dicts out (XCom carries ids, never data).

Each DAG task calls exactly one function here; the work itself lives in the modules these call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import httpx

from recommender.config import Settings
from recommender.data.landing import (
    LandedFile,
    LandingPlan,
    commit_landed,
    plan_landing,
    stage_landed,
)
from recommender.data.profile import Profile, profile_of
from recommender.data.store import Store
from recommender.modeling.families import MODELS
from recommender.modeling.matrix import Weighting
from recommender.modeling.training import TrainConfig
from recommender.online.experiments import RecommendationIds, end_experiment, running_experiment
from recommender.online.keys import Keys, decode
from recommender.online.lookup import active_version, model_version_of
from recommender.online.redis_conn import connect
from recommender.ops.experiment_report import experiment_report
from recommender.ops.forget import forget_pending, forget_user, purge_forgotten_models
from recommender.ops.monitoring import check_drift
from recommender.ops.stream import drain_catalog, drain_stream
from recommender.registry.lifecycle import (
    publish_model,
    rollback_and_republish,
    select_and_register,
    train_and_register,
)
from recommender.registry.promotion import Decision, promote
from recommender.registry.publish import begin, finish, write_shard
from recommender.registry.tracking import (
    load_bundle,
    log_experiment,
    log_monitoring,
    production_snapshot,
    reference_profile,
    tracking_errors,
)

WEIGHTING_FIELDS = ("half_life_days", "recency_half_life", "bm25", "log_scale")


class SmokeCheckError(RuntimeError):
    """The published answer is not what was just published."""


def drain_events(settings: Settings) -> dict[str, object]:
    """Store the API's event stream (ack after commit) and its live catalog changes; returns the ingest summary."""
    with connect(settings) as r:
        summary = drain_stream(settings, r).to_dict()
        return {**summary, "catalog_changes": drain_catalog(settings, r)}


def plan_landed_files(settings: Settings) -> dict[str, object]:
    """Upsert the waiting catalogs and list the waiting event files (the landing pass's first task)."""
    return plan_landing(settings).to_dict()


def stage_landed_file(settings: Settings, path: str) -> dict[str, object]:
    """Validate, deduplicate and stage one landed event file, uncommitted (one mapped task)."""
    return stage_landed(settings, path)


def commit_landed_files(settings: Settings, plan: dict[str, Any], staged: list[dict[str, Any]]) -> dict[str, object]:
    """Commit every staged file of the pass in one snapshot and move the files aside."""
    done = [LandedFile(**f) for f in plan["done"]]
    return commit_landed(settings, LandingPlan(plan["ingest_id"], plan["files"], done), list(staged)).to_dict()


def snapshot_mark(settings: Settings) -> int | None:
    """The events table's current snapshot (None while empty): where an ingest run starts from."""
    return Store(settings).current_snapshot_id()


def stored_since(settings: Settings, mark: int | None) -> int:
    """Events stored after ``mark``, by any attempt of any task (retries included)."""
    return Store(settings).stored_since(mark)


def current_snapshot(settings: Settings, requested: int | None = None) -> int | None:
    """``requested`` if the events table has it, else the newest snapshot (None: nothing ingested yet)."""
    store = Store(settings)
    if requested is not None:
        if requested not in {s.snapshot_id for s in store.snapshots()}:
            raise LookupError(f"snapshot {requested} is not in the events table; see `recsys snapshots`")
        return requested
    return store.current_snapshot_id()


def train_config(settings: Settings, params: Mapping[str, Any], snapshot_id: int | None = None) -> TrainConfig:
    """A training request from flat parameters (a DAG's trigger form): null means the default.

    Keys: ``model`` (``auto`` is handled by :func:`train_candidate`); the family's own hyperparameters
    (``factors``, ``iterations``, ...; others are ignored, so one form serves every family);
    ``event_weights``, ``half_life_days``, ``recency_half_life``, ``bm25``, ``log_scale``; ``k``; ``seed``.
    """
    family = str(params.get("model") or "als")
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; choose one of {', '.join(MODELS)}")
    hyper = {k: params[k] for k in MODELS[family].defaults if params.get(k) is not None}
    weights = params.get("event_weights") or dict(settings.event_weights)
    weighting = Weighting(
        event_weights={str(k): float(v) for k, v in weights.items()},
        **{k: params[k] for k in WEIGHTING_FIELDS if params.get(k) is not None},
    )
    return TrainConfig(
        family=family,
        params=hyper,
        seed=int(params["seed"]) if params.get("seed") is not None else settings.seed,
        snapshot_id=snapshot_id,
        k=int(params["k"]) if params.get("k") is not None else settings.k,
        weighting=weighting,
    )


def train_candidate(
    settings: Settings, params: Mapping[str, Any], snapshot_id: int, request_id: str | None = None
) -> dict[str, Any]:
    """Train and evaluate on ``snapshot_id``, track the run, register the model as ``candidate``.

    ``request_id`` names the DAG run: a retried attempt reuses the run and version an earlier one registered.
    When no snapshot was asked for and a forget expired the picked one meanwhile, the newest is used.
    """
    if params.get("snapshot_id") is None and snapshot_id not in {s.snapshot_id for s in Store(settings).snapshots()}:
        snapshot_id = current_snapshot(settings) or snapshot_id
    with tracking_errors(settings):
        if params.get("model") == "auto":
            out = select_and_register(
                settings,
                snapshot_id,
                params.get("budget_seconds"),
                request_id=request_id,
                sequential_seconds=params.get("sequential_seconds"),
            )
            k = settings.k
        else:
            config = train_config(settings, params, snapshot_id)
            out = train_and_register(settings, config, request_id=request_id)
            k = config.k
    headline = {m: v for m, v in out.metrics.items() if m.endswith(f"_at_{k}") or m.endswith("lift_over_baseline")}
    return {
        "run_id": out.run_id,
        "experiment_id": out.experiment_id,
        "model_version": out.model_version,
        "snapshot_id": out.snapshot_id,
        "family": out.family,
        "selection_run_id": out.selection_run_id,
        "reused": out.reused,
        "metrics": headline,
    }


def stage(settings: Settings, version: str) -> dict[str, object]:
    """Point ``staging`` at ``version``."""
    return promote(settings, "staging", version).to_dict()


def gate_and_promote(settings: Settings, version: str, auto_promote: bool = True) -> dict[str, object]:
    """Run the quality gate and, when it passes, point ``production`` at ``version``.

    With ``auto_promote`` off the version stays in staging for a human (the ``promote_model`` DAG).
    """
    if not auto_promote:
        reason = "auto_promote is off: promote it with the promote_model DAG"
        return Decision(version, "production", "held", reason, None).to_dict()
    return promote(settings, "production", version).to_dict()


def human_decision(
    settings: Settings, action: str, version: str | None, reason: str, force: bool = False
) -> dict[str, object]:
    """``promote`` a version to production through the gate (``force`` overrides), or ``rollback``."""
    if action == "rollback":
        decision, published = rollback_and_republish(settings, reason)
        return {**decision.to_dict(), "published": published.to_dict()}
    if action != "promote":
        raise ValueError(f"action must be promote or rollback, not {action!r}")
    if not version:
        raise ValueError("promote needs a version")
    return promote(settings, "production", version, force=force, reason=reason if force else None).to_dict()


def publish_version(settings: Settings, version: str) -> dict[str, object]:
    """Publish registered ``version`` to Redis and make it the served one."""
    return publish_model(settings, alias=None, version=version).to_dict()


def plan_publish(settings: Settings, model_version: str) -> list[dict[str, Any]]:
    """Start publishing registered ``model_version``: one part per ``RECSYS_PUBLISH_SHARDS`` to map tasks over."""
    bundle, _ = load_bundle(settings, alias=None, model_version=model_version)
    with connect(settings) as r:
        version = begin(r, settings, bundle, model_version, Store(settings).read_items())
    n = settings.publish_shards
    return [{"model_version": model_version, "version": version, "shard": s, "shards": n} for s in range(n)]


def publish_part(settings: Settings, part: Mapping[str, Any]) -> dict[str, Any]:
    """Score and write one shard of a started publish (see :func:`plan_publish`)."""
    bundle, _ = load_bundle(settings, alias=None, model_version=str(part["model_version"]))
    with connect(settings) as r:
        keys = Keys(settings.redis_prefix)
        written = write_shard(r, keys, str(part["version"]), bundle, settings, int(part["shard"]), int(part["shards"]))
    return {**part, **written}


def flip_published(settings: Settings, parts: list[Mapping[str, Any]]) -> dict[str, object]:
    """After every shard succeeded: check them in Redis and make the version the served one."""
    versions = {str(p["version"]) for p in parts}
    if len(versions) != 1:
        raise ValueError(f"shards of more than one version: {sorted(versions)}")
    with connect(settings) as r:
        return finish(r, settings, versions.pop()).to_dict()


def forget_users(settings: Settings, raw_user_id: str | None = None) -> list[dict[str, object]]:
    """Forget ``raw_user_id`` (when given) and every deletion requested through the API."""
    reports = [forget_user(settings, raw_user_id)] if raw_user_id else []
    return [r.to_dict() for r in reports + forget_pending(settings)]


def purge_models_of_forgotten(settings: Settings) -> dict[str, object]:
    """Delete the registered versions past the retention that hold a forgotten user."""
    return purge_forgotten_models(settings).to_dict()


def monitor(settings: Settings) -> dict[str, Any]:
    """Drift of the newest data against the production model's reference profile, and its health; logged to MLflow.

    Returns the report with ``skipped`` set when nothing is in production yet.
    """
    production = production_snapshot(settings)
    if production is None:
        return {"skipped": "nothing in production yet", "drifted": False}
    version, snapshot = production
    bundle, _ = load_bundle(settings, alias=None, model_version=version)
    reference = reference_profile(settings, version) or _profile_of_snapshot(settings, version, snapshot)
    drift = check_drift(settings, reference, bundle)
    with connect(settings) as r:
        active = active_version(r, Keys(settings.redis_prefix))
        meta = r.hgetall(Keys(settings.redis_prefix).meta(active)) if active else {}
    if meta.get("published_at"):  # how old the served lists are, and how much of the catalogue they cover
        age = datetime.now(UTC) - datetime.fromisoformat(str(meta["published_at"]))
        drift.measures["published_age_hours"] = round(age.total_seconds() / 3600, 3)
    if meta.get("coverage"):
        drift.measures["served_catalog_coverage"] = float(meta["coverage"])
    report = drift.to_dict()
    report["mlflow_run_id"] = log_monitoring(settings, report, version)
    return report


def _profile_of_snapshot(settings: Settings, version: str, snapshot: int) -> Profile:
    """For a version trained before profiles were logged: its training snapshot's, while that still exists."""
    try:
        events = Store(settings).read_events(snapshot, ("item_id", "event_type", "timestamp"))
    except LookupError as exc:
        raise LookupError(
            f"model version {version} has no reference profile and its training snapshot {snapshot} was expired "
            "(forgetting a user expires older snapshots): retrain, and monitoring uses the new version's profile"
        ) from exc
    return profile_of(events, settings.drift_window_days, snapshot)


def experiment(settings: Settings) -> dict[str, Any]:
    """The champion/challenger report (per user, over the experiment's window), logged to MLflow.

    ``skipped`` when no experiment runs.
    """
    keys = Keys(settings.redis_prefix)
    with connect(settings) as r:
        running = running_experiment(r, keys)
        active = active_version(r, keys)
        if running is None or active is None:
            return {"skipped": "no challenger is published (recsys publish --challenger)"}
        production, challenger = (str(model_version_of(r, keys, v)) for v in (active, running.challenger))
        exposed = {
            v: {str(u) for u in r.sscan_iter(keys.exposed(running.id, v), count=10_000)}
            for v in (production, challenger)
        }
        served = {str(k): int(v) for k, v in r.hgetall(keys.served(running.id)).items()}
        new_served = {str(k): int(v) for k, v in r.hgetall(keys.new_served(running.id)).items()}
        new_shown = {
            v: {str(i) for i in r.sscan_iter(keys.new_shown(running.id, v), count=10_000)}
            for v in (production, challenger)
        }
    columns = ("user_id", "item_id", "recommendation_id", "event_type", "timestamp", "price", "quantity")
    events = Store(settings).read_events(columns=columns)
    ids = RecommendationIds(settings.hmac_secret.get_secret_value())
    report = experiment_report(
        events, exposed, served, production, challenger, running.started_at, running.id, ids, new_served, new_shown
    ).to_dict()
    report["mlflow_run_id"] = log_experiment(settings, report)
    with connect(settings) as r:  # the console shows the last one
        r.set(keys.experiment_report, json.dumps(report, default=str))
    return report


def export_served(
    settings: Settings, placement: str | None = None, n: int | None = None, force: bool = False
) -> dict[str, Any]:
    """Export every user's list of ``placement`` (``RECSYS_EXPORT_PLACEMENT`` when None) from the served version
    to ``RECSYS_EXPORT_TO`` (the ``recommendations`` table when unset); ``skipped`` when neither names one."""
    from recommender.ops.export import export_recommendations

    chosen = placement or settings.export_placement
    if not chosen:
        return {"skipped": "no export asked for (RECSYS_EXPORT_PLACEMENT, or the placement param)"}
    return export_recommendations(settings, chosen, n, settings.export_to, settings.export_format, force)


def refresh_served_audiences(settings: Settings) -> dict[str, object]:
    """The audiences ``GET /v1/audiences`` keeps, computed for the served version where they are missing."""
    from recommender.registry.audience import refresh_audiences

    return refresh_audiences(settings)


def stop_experiment(settings: Settings) -> dict[str, object]:
    """Stop serving the challenger and drop the experiment's counts (its published copy goes with the next publish)."""
    with connect(settings) as r:
        ended = end_experiment(r, Keys(settings.redis_prefix))
    return {
        "stopped": None if ended is None else ended.challenger,
        "experiment_id": None if ended is None else ended.id,
    }


def smoke_check(settings: Settings, model_version: str, wait_seconds: float = 10.0) -> dict[str, object]:
    """Read back what the shop will see: the active version and a few users' lists in Redis, and the API.

    Raises :class:`SmokeCheckError` when the served model is not ``model_version`` or a list is empty.
    The API is asked only when ``RECSYS_API_URL`` is set.
    """
    keys = Keys(settings.redis_prefix)
    with connect(settings) as r:
        version = active_version(r, keys)
        served = model_version_of(r, keys, version)
        if served != model_version:
            raise SmokeCheckError(f"Redis serves model version {served!r}, not {model_version!r}")
        sample = islice(r.scan_iter(match=keys.ns(str(version)) + "user:*", count=1000), settings.smoke_users)
        users = [keys.user_of(key) for key in sample]
        lengths = {u[:8]: len(decode(r.get(keys.user(str(version), u)))[0]) for u in users}
    if not users or min(lengths.values()) == 0:
        raise SmokeCheckError(f"published version {version} has empty user lists: {lengths}")
    report: dict[str, object] = {"version": version, "model_version": model_version, "user_list_lengths": lengths}
    if settings.api_url:
        report["api"] = _api_serves(settings.api_url, model_version, wait_seconds)
    return report


def _api_serves(url: str, model_version: str, wait_seconds: float) -> dict[str, object]:
    """Poll the API's ``/readyz`` until it serves ``model_version`` (it caches the active version briefly)."""
    deadline = time.monotonic() + wait_seconds
    body: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).json()
        except (httpx.HTTPError, ValueError) as exc:
            body = {"error": str(exc)}
        if body.get("model_version") == model_version:
            return body
        time.sleep(0.5)
    raise SmokeCheckError(f"the API at {url} does not serve model version {model_version}: {body}")
