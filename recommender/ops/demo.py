"""The main job (``make demo`` / ``recsys demo``), through the real stack and Airflow's REST API.

``recsys up`` (or the stack already up for this ``RECSYS_HOME``) -> a synthetic shop dropped in
the landing folder -> ``ingest_interactions`` triggered as the UI's Trigger button does -> its
``interactions`` Asset starts ``retrain_recommender`` (train, MLflow run + registry, gate,
publish, smoke check) -> recommendations read back from the API.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from recommender.config import Settings
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.ops.airflow_api import AirflowClient, DagRun
from recommender.ops.stack import Running, StackInfo, local_stack, running_stack
from recommender.progress import StepFn, silent

DEMO_SHOP = ShopSpec(users=3_000, items=600, events=120_000, seed=42, days=60)
DEMO_USERS = ("u1", "u2", "u3")
DEMO_ITEM = "i1"
DAG_IDS = ("ingest_interactions", "retrain_recommender", "promote_model", "forget_user", "monitor_recommender")


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced, and where to look at it."""

    stack: StackInfo
    landed: list[str]
    ingest: DagRun
    retrain: DagRun
    retrain_trigger: str  # asset | manual (when the shop was already ingested)
    trained: dict[str, Any]
    decision: dict[str, Any]
    recommendations: dict[str, dict[str, Any]]
    similar: dict[str, Any]

    @property
    def mlflow_run_url(self) -> str:
        """The training run in the MLflow UI."""
        t = self.trained
        return f"{self.stack.mlflow}/#/experiments/{t['experiment_id']}/runs/{t['run_id']}"


@contextmanager
def stack_for(settings: Settings, notify: StepFn = silent) -> Iterator[tuple[StackInfo, Running | None]]:
    """The stack already up for this ``RECSYS_HOME``, or a new one (stopped on exit)."""
    info = running_stack(settings)
    if info is not None:
        notify(f"using the stack already up (pid {info.pid})")
        yield info, None
        return
    with local_stack(settings, notify) as running:
        yield running.info, running


def drop_shop(settings: Settings, spec: ShopSpec = DEMO_SHOP) -> list[str]:
    """Generate a shop and move its files into the landing folder (whole files only: rename is atomic)."""
    shop = settings.home_abs / "demo" / "shop"
    events, catalog = write_shop(generate(spec), shop)
    settings.landing.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    landed = []
    for path in (catalog, events):
        staged = settings.landing / f".{path.name}.part"
        shutil.copyfile(path, staged)
        target = settings.landing / f"demo-{stamp}-{path.name}"
        os.replace(staged, target)
        landed.append(str(target))
    return landed


def _api_get(settings: Settings, url: str) -> dict[str, Any]:
    keys = [k for k, found in settings.parsed_api_keys().items() if found.role in ("read", "admin")]
    headers = {"X-API-Key": keys[0]} if keys and not settings.reads_open else {}
    response = httpx.get(url, headers=headers, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def run_demo(settings: Settings, info: StackInfo, step: StepFn = silent, spec: ShopSpec = DEMO_SHOP) -> DemoResult:
    """Drop a shop in the landing folder, run ingest and retrain through Airflow, read the API."""
    mark, dropped_at = Store(settings).current_snapshot_id(), datetime.now(UTC).isoformat()
    step("generating a synthetic shop into the landing folder")
    landed = drop_shop(settings, spec)
    airflow = AirflowClient(info.airflow, info.airflow_user, info.airflow_password)
    for dag_id in DAG_IDS:
        airflow.wait_for_dag(dag_id)
        airflow.unpause(dag_id)
    step("triggering ingest_interactions (as the UI's Trigger button does)")
    ingest = airflow.wait(airflow.trigger("ingest_interactions"), notify=step)
    # the shop may have been picked up by this run or by a scheduled one queued before it
    announced = Store(settings).stored_since(mark) > 0
    if announced:
        step("the interactions Asset was updated: waiting for the retrain it starts")
        retrain = airflow.next_run("retrain_recommender", after=dropped_at)
    else:
        step("nothing new was stored (this shop was ingested before): triggering retrain_recommender by hand")
        retrain = airflow.trigger("retrain_recommender")
    retrain = airflow.wait(retrain, notify=step)
    trained = airflow.xcom(retrain, "train_and_evaluate")
    decision = airflow.xcom(retrain, "gate_and_promote")
    recs = {u: _api_get(settings, f"{info.api}/v1/users/{u}/recommendations?n=5") for u in DEMO_USERS}
    similar = _api_get(settings, f"{info.api}/v1/items/{DEMO_ITEM}/similar?n=5")
    return DemoResult(
        info, landed, ingest, retrain, "asset" if announced else "manual", trained, decision, recs, similar
    )
