"""The API runs on the project's core dependencies alone (what the slim image installs).

``python -m serving`` is started with every package of the ``pipeline`` extra made unimportable
(read from pyproject.toml), then answers real requests from the published version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import packages_distributions
from typing import Any

from recommender.config import Settings
from tests.conftest import REPO, SECRET, free_port

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is not in the API's dependency set")
sys.meta_path.insert(0, Block())
sys.argv = ["serving", "--port", sys.argv[2]]
runpy.run_module("serving", run_name="__main__")
"""


def closure(lock: dict[str, dict[str, Any]], deps: list[dict[str, Any]]) -> set[str]:
    """Every package ``deps`` pull in according to uv.lock (with the extras they ask for)."""
    seen: set[str] = set()
    todo = list(deps)
    while todo:
        dep = todo.pop()
        package = lock[dep["name"]]
        extras = [e for e in dep.get("extra", []) if (dep["name"], e) not in seen]
        if dep["name"] in seen and not extras:
            continue
        seen |= {dep["name"], *((dep["name"], e) for e in extras)}  # type: ignore[arg-type]
        todo += package.get("dependencies", [])
        for extra in extras:
            todo += package.get("optional-dependencies", {}).get(extra, [])
    return {name for name in seen if isinstance(name, str)}


def pipeline_modules() -> set[str]:
    """Top-level modules of the packages only the ``pipeline`` extra brings (what the slim image lacks)."""
    lock = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    root = lock["recsys"]
    core = closure(lock, root["dependencies"])
    full = closure(lock, root["dependencies"] + root["optional-dependencies"]["pipeline"])
    only = {name.replace("_", "-") for name in full - core}
    return {
        module
        for module, dists in packages_distributions().items()
        if all(d.lower().replace("_", "-") in only for d in dists) and not module.startswith("_")
    }


def get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


@contextmanager
def slim_api(settings: Settings) -> Iterator[str]:
    """``python -m serving`` with the pipeline's packages unimportable; yields its base URL."""
    blocked = pipeline_modules()
    port = free_port()
    env = {
        **os.environ,
        "RECSYS_HOME": str(settings.home),
        "RECSYS_REDIS_URL": str(settings.redis_url),
        "RECSYS_HMAC_SECRET": SECRET,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKER, ",".join(sorted(blocked)), str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                status, ready = get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                assert time.monotonic() < deadline, "the API did not come up"
                time.sleep(0.2)
        assert status == 200 and ready["ready"] is True
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out, out


def test_the_pipeline_libraries_are_what_the_slim_image_lacks() -> None:
    assert {
        "airflow",
        "mlflow",
        "implicit",
        "pyiceberg",
        "scipy",
        "typer",
        "jax",
        "flax",
        "optax",
    } <= pipeline_modules()


def test_the_api_serves_without_the_pipeline_dependencies(api_settings: Settings) -> None:
    with slim_api(api_settings) as base:
        status, body = get(f"{base}/v1/users/u1/recommendations?n=5&category=c02")
    assert status == 200 and body["source"] == "personalized" and len(body["items"]) == 5  # type: ignore[arg-type]


def test_a_session_is_re_scored_by_the_sequential_model_without_jax(sequential_settings: Settings) -> None:
    with slim_api(sequential_settings) as base:
        event = {"user_id": "u11", "item_id": "i3", "event_type": "view", "timestamp": "2025-06-01T00:00:00Z"}
        request = urllib.request.Request(
            f"{base}/v1/events", data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 202
        status, body = get(f"{base}/v1/users/u11/recommendations?n=5")
    assert status == 200 and body["source"] == "session" and len(body["items"]) == 5  # type: ignore[arg-type]
    assert "i3" not in [i["item_id"] for i in body["items"]]  # type: ignore[union-attr]
