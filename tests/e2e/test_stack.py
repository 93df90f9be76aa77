"""End to end: ``recsys up`` on free ports in a temp RECSYS_HOME, driven the way people drive it.

The demo runs against the stack (landing folder -> ingest DAG via the REST API -> Asset ->
retrain DAG -> API); a retrain with changed parameters is triggered over the REST API like the
UI's form does; the Airflow and MLflow UIs are checked in a real browser; stopping the stack
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import sync_playwright

from tests.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, needs_chromium

RECSYS = str(Path(sys.executable).with_name("recsys"))
pytestmark = pytest.mark.e2e


def processes_with(marker: str) -> list[int]:
    """Pids whose environment mentions ``marker`` (every child of the stack inherits RECSYS_HOME)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


class Stack:
    """A ``recsys up`` child process and what it printed."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "RECSYS_HOME": str(home),
            "RECSYS_API_PORT": str(free_port()),
            "RECSYS_MLFLOW_PORT": str(free_port()),
            "RECSYS_AIRFLOW_PORT": str(free_port()),
            "RECSYS_HMAC_SECRET": "e2e-secret",
        }
        self.proc = subprocess.Popen(
            [RECSYS, "up", "--json"], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once every part is healthy
        if not line:
            raise AssertionError(f"recsys up failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        return self.proc.wait(timeout=120)

    def token(self) -> str:
        response = httpx.post(
            f"{self.info['airflow']}/auth/token",
            json={"username": self.info["airflow_user"], "password": self.info["airflow_password"]},
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack") / "home")
    login = {
        "MLFLOW_TRACKING_USERNAME": running.info["mlflow_user"],
        "MLFLOW_TRACKING_PASSWORD": running.info["mlflow_password"],
    }
    saved = {k: os.environ.get(k) for k in login}
    os.environ.update(login)  # the tests' MLflow clients log in like Airflow's tasks
    try:
        yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if running.proc.poll() is None:
            running.stop()


def test_mlflow_answers_nobody_without_credentials(stack: Stack) -> None:
    url = stack.info["mlflow"]
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert httpx.get(search).status_code == 401
    assert httpx.get(search, auth=("admin", "wrong-password")).status_code == 401
    assert httpx.get(search, auth=(stack.info["mlflow_user"], stack.info["mlflow_password"])).status_code == 200
    assert httpx.get(f"{url}/").status_code == 401  # the UI too
    assert httpx.get(f"{url}/health").status_code == 200  # only the probe is open
    assert stack.info["mlflow"].startswith("http://127.0.0.1:")  # bound to loopback


def test_demo_runs_ingest_and_the_asset_triggered_retrain_and_serves(stack: Stack) -> None:
    out = subprocess.run(
        [RECSYS, "demo", "--no-serve", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["stack"]["pid"] == stack.info["pid"]  # it used the running stack
    assert result["ingest_run"]["state"] == result["retrain_run"]["state"] == "success"
    assert result["retrain_trigger"] == "asset" and result["retrain_run"]["run_type"] == "asset_triggered"
    version = result["trained"]["model_version"]
    assert result["decision"]["decision"] == "passed"
    recs = result["recommendations"]["u1"]
    assert recs["source"] == "personalized" and recs["model_version"] == version and len(recs["items"]) == 5
    mlflow = MlflowClient(tracking_uri=stack.info["mlflow"], registry_uri=stack.info["mlflow"])
    assert mlflow.get_model_version_by_alias("shop-recommender", "production").version == version


def test_a_retrain_triggered_with_other_parameters_is_a_new_comparable_run(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token()}"}
    api = f"{stack.info['airflow']}/api/v2/dags/retrain_recommender/dagRuns"
    mlflow = MlflowClient(tracking_uri=stack.info["mlflow"], registry_uri=stack.info["mlflow"])
    before = mlflow.get_model_version_by_alias("shop-recommender", "production")
    bad = httpx.post(api, headers=headers, json={"logical_date": None, "conf": {"model": "svd"}})
    assert bad.status_code == 400  # the form's schema is enforced
    conf = {"model": "itemknn", "K": 50, "half_life_days": 20}
    created = httpx.post(api, headers=headers, json={"logical_date": None, "conf": conf})
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]
    state = "queued"
    deadline = time.monotonic() + 600
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(3)
        state = httpx.get(f"{api}/{run_id}", headers=headers).json()["state"]
    assert state == "success"

    experiment = mlflow.get_experiment_by_name("shop-recommender")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    newest, previous = runs[0], runs[1]
    assert newest.data.params["family"] == "itemknn" and newest.data.params["model.K"] == "50"
    assert previous.data.params["family"] == "als"
    assert set(newest.data.metrics) >= {"val_ndcg_at_10", "test_hr_at_10"}  # same keys: comparable
    staged = mlflow.get_model_version_by_alias("shop-recommender", "staging")
    assert staged.run_id == newest.info.run_id
    # the gate's rule, recomputed from the logged metrics: beat the run's popularity baseline and
    # stay within RECSYS_GATE_TOLERANCE (5%) of the production version it is compared with
    new = newest.data.metrics
    old = mlflow.get_run(str(before.run_id)).data.metrics
    passes = (
        new["val_ndcg_at_10"] > new["baseline_val_ndcg_at_10"]
        and new["val_ndcg_at_10"] >= 0.95 * (old["val_ndcg_at_10"])
    )
    assert staged.tags["gate_decision"] == ("passed" if passes else "refused")
    production = mlflow.get_model_version_by_alias("shop-recommender", "production").version
    assert production == (staged.version if passes else before.version)
    deadline = time.monotonic() + 10  # the API trusts its active version for RECSYS_ACTIVE_CACHE_SECONDS
    while (served := httpx.get(f"{stack.info['api']}/v1/users/u1/recommendations?n=3").json())[
        "model_version"
    ] != production and time.monotonic() < deadline:
        time.sleep(0.5)
    assert served["model_version"] == production


@needs_chromium
def test_airflow_and_mlflow_uis_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    info = stack.info
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(  # MLflow's basic auth; Airflow has its own login form
            viewport={"width": 1400, "height": 1000},
            http_credentials={"username": info["mlflow_user"], "password": info["mlflow_password"]},
        )
        page = context.new_page()
        page.goto(f"{info['airflow']}/")
        page.get_by_label("Username").fill(info["airflow_user"])
        page.get_by_label("Password").fill(info["airflow_password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{info['airflow']}/", timeout=30_000)
        page.goto(f"{info['airflow']}/dags")
        page.get_by_text("retrain_recommender").first.wait_for(timeout=30_000)
        page.goto(f"{info['airflow']}/dags/retrain_recommender")
        page.wait_for_load_state("networkidle")
        page.get_by_role("button", name="Trigger").first.click()
        page.get_by_text("Run Parameters").first.wait_for(timeout=30_000)
        for title in ("Model family", "Factors (ALS, BPR)", "Event-type weights", "Promote automatically"):
            page.get_by_text(title).first.wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "airflow-trigger.png"))

        mlflow = MlflowClient(tracking_uri=info["mlflow"])
        experiment = mlflow.get_experiment_by_name("shop-recommender")
        assert experiment is not None
        page.goto(f"{info['mlflow']}/")
        page.get_by_text("shop-recommender").first.wait_for(timeout=60_000)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        page.goto(f"{info['mlflow']}/#/experiments/{experiment.experiment_id}/runs")
        for family in ("als-", "itemknn-"):  # both retrains, side by side
            page.get_by_text(family).first.wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "mlflow-runs.png"))
        browser.close()


def test_stopping_the_stack_leaves_no_process(stack: Stack) -> None:
    assert stack.stop() == 0
    time.sleep(1)
    assert processes_with(f"RECSYS_HOME={stack.home}") == []
    assert not (stack.home / "stack.json").exists()
