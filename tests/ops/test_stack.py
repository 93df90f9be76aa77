"""The local stack's Airflow settings hook: the scheduler preloads the pipeline library, nothing else does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recommender.config import Settings
from recommender.ops.stack import AIRFLOW_SETTINGS, airflow_env

PROBE = """
import json, sys, threading
sys.argv = ["airflow", *sys.argv[1:]]
import airflow_local_settings
print(json.dumps({"pipeline": "recommender.ops.pipeline" in sys.modules, "threads": threading.active_count()}))
"""


@pytest.mark.parametrize(("component", "preloads"), [("scheduler", True), ("api-server", False), ("triggerer", False)])
def test_only_the_scheduler_preloads_the_pipeline_and_starts_no_thread(component: str, preloads: bool) -> None:
    env = airflow_env(Settings(), {"PYTHONPATH": "/somewhere/else"})
    assert env["PYTHONPATH"].split(":") == [str(AIRFLOW_SETTINGS), "/somewhere/else"]
    probe = [sys.executable, "-c", PROBE, component]
    out = subprocess.run(probe, env={"PYTHONPATH": env["PYTHONPATH"]}, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    # the LocalExecutor forks the tasks from the scheduler: a thread started here would not survive the fork
    assert json.loads(out.stdout) == {"pipeline": preloads, "threads": 1}
