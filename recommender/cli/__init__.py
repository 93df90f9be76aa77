"""``recsys``: the command-line tool. Thin: each command calls one library function.

Every command prints a human summary, or with ``--json`` exactly one JSON line on
stdout; progress and notices go to stderr. Errors are one line that says what to do,
with a non-zero exit.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit warns and slows down otherwise
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for our own progress
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

from recommender.cli import data, models, monitor, rules, serve, stack
from recommender.cli.common import app

__all__ = ["app", "data", "models", "monitor", "rules", "serve", "stack"]
