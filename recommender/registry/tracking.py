"""MLflow tracking: one run per training, the model logged as pyfunc and registered.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else SQLite under ``RECSYS_HOME`` with
artifacts in ``RECSYS_HOME/mlartifacts`` (MLflow 3 deprecates the file store).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import requests
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recommender.config import Settings
from recommender.data.profile import ARTIFACT as PROFILE_ARTIFACT
from recommender.data.profile import Profile
from recommender.modeling.bundle import Bundle
from recommender.modeling.evaluation import EvalResult, segments
from recommender.modeling.selection import Selection, Trial
from recommender.modeling.training import Trained, flat_params
from recommender.registry.pyfunc import SIGNATURE

CANDIDATE, STAGING, PRODUCTION = "candidate", "staging", "production"
REQUEST_TAG = "recsys.request_id"
"""Tag of the runs a request (an Airflow DAG run, say) made: its retries find them."""
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""Opens the experiment on its training runs in the MLflow UI (not the GenAI trace views)."""
REQUIREMENTS = ("implicit", "numpy", "scipy", "pandas", "pyarrow", "mlflow")
SEQUENTIAL_REQUIREMENTS = ("jax", "flax", "optax")
"""What loading a model with a sequential part adds (its weights are read with Flax)."""


@dataclass(frozen=True)
class Tracked:
    """Where a training landed in MLflow."""

    run_id: str
    experiment_id: str
    model_version: str | None


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking URI (also set as mlflow's default)."""
    if settings.mlflow_tracking_uri is None:
        settings.home_abs.mkdir(parents=True, exist_ok=True)
    uri = settings.tracking_uri
    # mlflow.set_*_uri also export MLFLOW_*_URI to os.environ; undo that so the environment
    # (which Settings reads) keeps saying only what the user set
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking server did not answer."""


def redacted(uri: str) -> str:
    """``uri`` without any credentials in it (for messages)."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return str(urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)))
    return uri


@contextmanager
def tracking_errors(settings: Settings) -> Iterator[None]:
    """Turn "MLflow is unreachable" (after the client's own retries) into one clear error."""
    try:
        yield
    except (requests.RequestException, MlflowException) as exc:
        text = str(exc)
        if isinstance(exc, MlflowException) and not ("API request to" in text and "failed with exception" in text):
            raise
        raise TrackingUnavailableError(
            f"MLflow at {redacted(settings.tracking_uri)} did not answer ({type(exc).__name__}); retry once it is "
            "back: a retry of the same request reuses what was already registered"
        ) from exc


def experiment_id(settings: Settings, name: str | None = None) -> str:
    """The experiment's id, creating it (with a local artifact root when tracking locally)."""
    c = client(settings)
    name = name or settings.experiment
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None if settings.mlflow_tracking_uri else (settings.artifact_root / name).as_uri()
    return str(c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS))


def git_commit() -> str:
    """The source commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _plot(trained: Trained, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[str, EvalResult] = {"model": trained.test, "popularity": trained.baseline_test}
    for ax, metric in zip(axes, ("hr", "ndcg"), strict=True):
        for label, result in series.items():
            ks = sorted(result.curve)
            ax.plot(ks, [result.curve[k][f"{metric}_at_{k}"] for k in ks], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_title(f"test {metric.upper()}@k ({trained.config.family})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _tables(trained: Trained, folder: Path) -> None:
    vocab = trained.data.inter.vocab
    for name, result in (("validation", trained.val), ("test", trained.test)):
        table = result.per_user.assign(
            user=vocab.users[result.per_user["user"]], target=vocab.items[result.per_user["target"]]
        )
        table.to_csv(folder / f"evaluation_{name}.csv", index=False)
        segments(result.per_user, trained.config.k).to_csv(folder / f"segments_{name}.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(trained.metrics(), indent=2, sort_keys=True))


def log_training(
    settings: Settings,
    trained: Trained,
    register: bool = True,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    request_id: str | None = None,
) -> Tracked:
    """Log one training as an MLflow run; register the model and give it the ``candidate`` alias.

    ``request_id`` (e.g. the Airflow DAG run) is tagged on the run, so a retry finds it (:func:`find_request`).
    """
    exp = experiment_id(settings)
    cfg, data = trained.config, trained.data
    run_name = run_name or f"{cfg.family}-{datetime.now(UTC):%Y%m%d-%H%M%S}"  # readable in the MLflow UI
    tags = {"git_commit": git_commit(), "snapshot_id": str(data.snapshot_id), "model_family": cfg.family}
    tags |= {REQUEST_TAG: request_id} if request_id else {}
    with mlflow.start_run(
        experiment_id=exp, run_name=run_name, tags=tags, parent_run_id=parent_run_id, nested=parent_run_id is not None
    ) as run:
        mlflow.log_params(
            {
                **flat_params(cfg.family, trained.bundle.model.params, trained.weighting),
                "seed": cfg.seed,
                "k": cfg.k,
                "snapshot_id": data.snapshot_id,
            }
        )
        with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways" (all the same)
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(data.source)
        digest = str(data.snapshot_id)[:36]
        dataset = MetaDataset(source=source, name="interactions", digest=digest)  # type: ignore[abstract]
        mlflow.log_input(
            dataset, context="training", tags={"snapshot_id": str(data.snapshot_id), "rows": str(data.rows)}
        )
        mlflow.log_metrics(
            {
                **trained.metrics(),
                "rows": float(data.rows),
                "users": float(len(data.inter.vocab.users)),
                "items": float(len(data.inter.vocab.items)),
            }
        )
        if trained.curve:
            client(settings).log_batch(run.info.run_id, metrics=curve_metrics(trained.curve))
        with tempfile.TemporaryDirectory(dir=tmp_dir(settings)) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            folder = Path(tmp)
            _plot(trained, folder / "metrics_at_k.png")
            _tables(trained, folder)
            mlflow.log_artifacts(str(folder), artifact_path="evaluation")
            mlflow.log_dict(data.profile.to_dict(), PROFILE_ARTIFACT)
            bundle_dir = trained.bundle.save(folder / "bundle")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={"bundle": str(bundle_dir)},
                signature=SIGNATURE,
                pip_requirements=[f"{p}=={version(p)}" for p in _requirements(trained)],
                registered_model_name=settings.model_name if register else None,
            )
        model_version = str(info.registered_model_version) if register and info.registered_model_version else None
        if model_version:
            _candidate(settings, model_version, trained.metrics(), data.snapshot_id)
        return Tracked(run_id=run.info.run_id, experiment_id=exp, model_version=model_version)


def _requirements(trained: Trained) -> tuple[str, ...]:
    sequential = trained.bundle.model.sequence_part() is not None
    return REQUIREMENTS + (SEQUENTIAL_REQUIREMENTS if sequential else ())


def _candidate(settings: Settings, model_version: str, metrics: dict[str, float], snapshot_id: int) -> None:
    """Alias a registered version ``candidate`` and tag it with its gate metrics and snapshot (idempotent)."""
    c = client(settings)
    c.set_registered_model_alias(settings.model_name, CANDIDATE, model_version)
    for key in ("val", "test", "baseline_val", "baseline_test"):
        metric = f"{key}_{settings.gate_metric}"
        c.set_model_version_tag(settings.model_name, model_version, metric, str(metrics[metric]))
    c.set_model_version_tag(settings.model_name, model_version, "snapshot_id", str(snapshot_id))


def find_request(settings: Settings, request_id: str) -> Tracked | None:
    """The registered training an earlier attempt of ``request_id`` left, finished as a candidate; else None.

    A retried DAG task calls this first, so it reuses its run and model version instead of
    registering a second one. An attempt that died before registering is marked failed.
    """
    if "'" in request_id:
        raise ValueError(f"request id {request_id!r} may not contain quotes")
    c, exp = client(settings), experiment_id(settings)
    runs = c.search_runs([exp], filter_string=f"tags.`{REQUEST_TAG}` = '{request_id}'")
    for run in runs:
        versions = c.search_model_versions(f"run_id = '{run.info.run_id}'")
        if versions:
            version = str(max(int(v.version) for v in versions))
            metrics = run.data.metrics
            _candidate(settings, version, metrics, int(run.data.tags["snapshot_id"]))
            if run.info.status != "FINISHED":
                c.set_terminated(run.info.run_id, "FINISHED")
            return Tracked(run_id=run.info.run_id, experiment_id=exp, model_version=version)
    for run in runs:
        if run.info.status == "RUNNING":
            c.set_terminated(run.info.run_id, "FAILED")
    return None


def tmp_dir(settings: Settings) -> Path:
    """A scratch folder under ``RECSYS_HOME`` for downloads."""
    path = settings.home_abs / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_bundle(
    settings: Settings, alias: str | None = PRODUCTION, model_version: str | None = None
) -> tuple[Bundle, str]:
    """The bundle of a registered model version (by alias or number) and that version's number.

    Read as data from the version's artifacts, whatever code or module path it was logged with.
    """
    c = client(settings)
    if model_version is None:
        if alias is None:
            raise ValueError("give an alias or a version")
        try:
            model_version = str(c.get_model_version_by_alias(settings.model_name, alias).version)
        except mlflow.exceptions.MlflowException as exc:
            raise LookupError(
                f"no model version has the alias {alias!r} in {settings.model_name}: "
                "train and promote one first (`recsys train`, `recsys promote --to production`)"
            ) from exc
    with tempfile.TemporaryDirectory(dir=tmp_dir(settings)) as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{settings.model_name}/{model_version}", dst_path=tmp)
        )
        return Bundle.load(local / BUNDLE_PATH), model_version


BUNDLE_PATH = Path("artifacts") / "bundle"
"""Where a logged model keeps its bundle. The pipeline reads the bundle's files (arrays and JSON, no pickle)
and never runs the model's code from the artifact store: only ``mlflow.pyfunc.load_model`` does, for people
who trust the store (docs/security.md)."""


def _metrics(values: dict[str, Any]) -> list[Metric]:
    """``log_batch`` metrics, stamped now."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


def curve_metrics(curve: list[dict[str, float]]) -> list[Metric]:
    """A learning curve as step metrics (``epoch_loss``, ``epoch_val_ndcg_at_10``, ... at step = epoch): the
    run's chart in the MLflow UI."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    return [
        Metric(f"epoch_{name}", float(value), now, int(record["epoch"]))
        for record in curve
        for name, value in record.items()
        if name != "epoch"
    ]


def start_selection_run(
    settings: Settings, snapshot_id: int, budget_seconds: float, max_trials: int, request_id: str | None = None
) -> str:
    """Open the parent run of an automatic selection; trials and the winner are nested under it."""
    c = client(settings)
    tags = {"git_commit": git_commit(), "snapshot_id": str(snapshot_id), "model_family": "auto"}
    run = c.create_run(
        experiment_id(settings),
        run_name=f"auto-{datetime.now(UTC):%Y%m%d-%H%M%S}",
        tags=tags | ({REQUEST_TAG: request_id} if request_id else {}),
    )
    run_id = str(run.info.run_id)
    for key, value in {"family": "auto", "budget_seconds": budget_seconds, "max_trials": max_trials}.items():
        c.log_param(run_id, key, value)
    c.log_param(run_id, "snapshot_id", snapshot_id)
    return run_id


def log_trial(settings: Settings, parent_run_id: str, trial: Trial) -> None:
    """One search trial as a nested run: its params and validation metrics (no artifacts)."""
    c = client(settings)
    parent = c.get_run(parent_run_id)
    run = c.create_run(
        parent.info.experiment_id,
        run_name=f"trial-{trial.number:03d}-{trial.family}",
        tags={"mlflow.parentRunId": parent_run_id, "model_family": trial.family, "trial": str(trial.number)},
    )
    metrics = {f"val_{k}": v for k, v in trial.metrics.items()} | {"seconds_trial": trial.seconds}
    c.log_batch(
        run.info.run_id,
        metrics=_metrics(metrics) + curve_metrics(trial.curve),
        params=[Param(k, str(v)) for k, v in trial.flat_params.items()],
    )
    c.set_terminated(run.info.run_id)


def finish_selection_run(settings: Settings, run_id: str, selection: Selection) -> None:
    """Record the search's outcome (best validation metric, every trial as a table) and close the run."""
    c = client(settings)
    best = max(selection.trials, key=lambda t: t.metrics[selection.metric])
    c.log_batch(
        run_id,
        metrics=_metrics(
            {
                f"best_val_{selection.metric}": selection.best_value,
                "trials": len(selection.trials),
                "seconds_search": selection.seconds,
            }
        ),
        params=[Param(f"best.{k}", str(v)) for k, v in best.flat_params.items()],
    )
    table = pd.DataFrame(
        [
            {"trial": t.number, **t.flat_params, **{f"val_{k}": v for k, v in t.metrics.items()}}
            for t in selection.trials
        ]
    )
    with tempfile.TemporaryDirectory(dir=tmp_dir(settings)) as tmp:
        path = Path(tmp) / "trials.csv"
        table.sort_values(f"val_{selection.metric}", ascending=False).to_csv(path, index=False)
        c.log_artifact(run_id, str(path), artifact_path="selection")
    c.set_terminated(run_id)


def production_snapshot(settings: Settings) -> tuple[str, int] | None:
    """(version, training snapshot id) of the production model, or None when nothing is in production."""
    c = client(settings)
    try:
        version = c.get_model_version_by_alias(settings.model_name, PRODUCTION)
    except mlflow.exceptions.MlflowException:
        return None
    return str(version.version), int(version.tags["snapshot_id"])


def reference_profile(settings: Settings, model_version: str) -> Profile | None:
    """The data profile logged with ``model_version``'s training run (None: trained before profiles were logged)."""
    c = client(settings)
    run_id = c.get_model_version(settings.model_name, model_version).run_id
    try:
        data = mlflow.artifacts.load_dict(f"runs:/{run_id}/{PROFILE_ARTIFACT}")
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    return Profile.from_dict(data)


def _log_report(
    settings: Settings,
    kind: str,
    run_name: str,
    tags: dict[str, str],
    metrics: dict[str, Any],
    report: dict[str, Any],
    artifact: str,
) -> str:
    """One run in the ``<experiment>-<kind>`` experiment: ``metrics``, and the whole report as JSON ``artifact``."""
    c = client(settings)
    run = c.create_run(experiment_id(settings, f"{settings.experiment}-{kind}"), run_name=run_name, tags=tags)
    c.log_batch(run.info.run_id, metrics=_metrics(metrics))
    c.log_dict(run.info.run_id, report, artifact)
    c.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def log_monitoring(settings: Settings, report: dict[str, Any], model_version: str) -> str:
    """A drift report as a run of ``<experiment>-monitoring``: the measures as metrics."""
    tags = {"model_version": model_version, "drifted": str(report["drifted"]).lower()}
    name = f"drift-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    return _log_report(settings, "monitoring", name, tags, report["measures"], report, "monitoring/drift_report.json")


def log_experiment(settings: Settings, report: dict[str, Any]) -> str:
    """The experiment report as a run of ``<experiment>-experiments``: per-user rates and p-values as metrics."""
    prod, chal = report["production"], report["challenger"]
    metrics = {"click_through_p": report["click_through_p"], "add_to_cart_p": report["add_to_cart_p"]}
    for name, arm in (("production", prod), ("challenger", chal)):
        metrics[f"{name}_users"] = arm["users"]
        metrics[f"{name}_served_lists"] = arm["served_lists"]
        news = arm.get("new_items") or {}
        metrics |= {f"{name}_new_item_{k}": news[k] for k in ("impressions", "clicks", "click_rate") if k in news}
        money = arm.get("revenue") or {}
        metrics |= {
            f"{name}_revenue_{k}": money[k] for k in ("total", "per_user", "buyers", "attributed") if k in money
        }
        for rate in ("click_through", "add_to_cart"):
            metrics |= {f"{name}_{rate}_{k}": arm[rate][k] for k in ("rate", "low", "high")}
    lift = report.get("revenue_per_user_lift") or {}
    metrics |= {f"revenue_per_user_lift_{k}": lift[k] for k in ("difference", "low", "high") if lift.get(k) is not None}
    run_name = f"v{prod['model_version']}-vs-v{chal['model_version']}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    tags = {"production": prod["model_version"], "challenger": chal["model_version"]}
    tags["experiment_id"] = report["experiment_id"]
    return _log_report(settings, "experiments", run_name, tags, metrics, report, "experiment/report.json")
