"""Benchmark: publishing in shards run in parallel processes versus one unsharded publish.

Each part's own time (model load + scoring + writing) is reported apart from the process start.
The sharded path is what the retrain DAG runs (``pipeline.plan_publish`` -> one
``pipeline.publish_part`` per shard, each in its own process loading the model from MLflow
as an Airflow worker does -> ``pipeline.flip_published``); the baseline is ``publish_model``
in one process. Same model, same Redis (an embedded Valkey), same machine, one run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/sharded_publish.py \
        --events 2000000 --users 100000 --items 20000 --shards 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_publish import _redis, prepare
from recommender.config import Settings
from recommender.modeling.training import TrainConfig
from recommender.ops.pipeline import flip_published, plan_publish, publish_part
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote


def _part(settings: Settings, part: dict[str, Any]) -> dict[str, Any]:
    """One shard as its Airflow task runs it (load the model from MLflow, score, write), timed inside."""
    started = time.perf_counter()
    return {**publish_part(settings, part), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--redis-url", default=os.environ.get("RECSYS_REDIS_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, _redis(args.redis_url, Path(tmp)) as url:
        args.redis_url = url
        settings = prepare(args, Path(tmp) / "home")
        out = train_and_register(settings, TrainConfig(family="als", params={"factors": 64, "iterations": 15}))
        promote(settings, "production", out.model_version)

        started = time.perf_counter()
        whole = publish_model(settings)
        unsharded = time.perf_counter() - started

        sharded_settings = settings.model_copy(update={"publish_shards": args.shards})
        started = time.perf_counter()
        parts = plan_publish(sharded_settings, out.model_version)
        planned = time.perf_counter() - started
        spawn = get_context("spawn")  # fork after implicit's OpenMP threads started hangs the children
        with ProcessPoolExecutor(max_workers=args.shards, mp_context=spawn) as pool:
            written = list(pool.map(_part, [sharded_settings] * len(parts), parts))
        scored = time.perf_counter() - started - planned
        flipped = flip_published(sharded_settings, written)
        sharded = time.perf_counter() - started
    print(
        json.dumps(
            {
                "users": whole.users,
                "items": whole.items,
                "shards": args.shards,
                "cores": os.cpu_count(),
                "unsharded_seconds": round(unsharded, 2),
                "sharded_seconds": round(sharded, 2),
                "sharded_plan_seconds": round(planned, 2),
                "sharded_parts_seconds": round(scored, 2),
                "slowest_part_seconds": round(max(p["seconds"] for p in written), 2),
                "speedup": round(unsharded / sharded, 3),
                "same_counts": (flipped["users"], flipped["items"]) == (whole.users, whole.items),
            }
        )
    )


if __name__ == "__main__":
    main()
