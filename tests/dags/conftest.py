"""Airflow for the DAG tests: a migrated SQLite metadata DB in a temp AIRFLOW_HOME, this repo's DAGs.

Airflow reads its configuration when first imported, so the environment is set here, when the
DAG tests are collected and before anything imports ``airflow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recommender.ops.stack import DAGS
from tests.conftest import MlflowServer

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="recsys-airflow-test-"))
os.environ.update(
    AIRFLOW_HOME=str(AIRFLOW_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
)
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))  # as Airflow does for its DAGs folder (recsys_common)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session (dag.test needs the metadata DB)."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return AIRFLOW_HOME


@pytest.fixture
def dag_env(
    airflow_db: Path, mlflow_server: MlflowServer, redis_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """RECSYS_* for the tasks (they read settings from the environment): own home and model name, shared servers."""
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    env = {
        "RECSYS_HOME": str(tmp_path / "home"),
        "RECSYS_HMAC_SECRET": "test-secret",
        "RECSYS_REDIS_URL": redis_server,
        **mlflow_server.client_env,
        "RECSYS_MODEL_NAME": f"model-{uuid.uuid4().hex[:8]}",
        "RECSYS_EXPERIMENT": f"exp-{uuid.uuid4().hex[:8]}",
        "RECSYS_PUBLISH_BATCH": "200",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_dag(dag_id: str, conf: dict[str, Any] | None = None, retry_delay: timedelta | None = None) -> Any:
    """``dag.test`` one of this repo's DAGs in-process; returns the DagRun.

    ``retry_delay`` replaces every task's (``dag.test`` waits it out before a retry: 10 s in the DAGs).
    """
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    if retry_delay is not None:
        for task in dag.tasks:
            task.retry_delay = retry_delay
            task.retry_exponential_backoff = False
    return dag.test(run_conf=conf)


def task_states(run: Any) -> dict[str, str]:
    """task_id (``task_id[i]`` for mapped task instances) -> state of a finished DagRun."""
    return {
        ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
        for ti in run.get_task_instances()
    }
