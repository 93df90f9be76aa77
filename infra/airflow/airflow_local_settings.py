"""Airflow's local-settings hook for the local stack (``recsys up`` puts this folder on ``PYTHONPATH``).

Every Airflow process imports this module when it starts. In the scheduler it also imports the
pipeline library: the LocalExecutor forks its workers from the scheduler, and each task from a
worker, so the tasks start with the library already loaded instead of importing it again (about
3 s per task on 2 cores: mlflow, pyiceberg, scipy...). The other components (API server, DAG
processor, triggerer) never run a task and stay light. Nothing here starts a thread, so forking
after it is safe (tests/ops/test_stack.py checks both).
"""

from __future__ import annotations

import sys

PRELOADED = "recommender.ops.pipeline"

if sys.argv[1:2] == ["scheduler"]:
    import importlib

    importlib.import_module(PRELOADED)
