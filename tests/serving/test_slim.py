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
from importlib.metadata import packages_distributions
from typing import Any

from recommender.config import Settings
from tests.conftest import REPO, free_port
from tests.serving.conftest import SECRET

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


def test_the_api_serves_without_the_pipeline_dependencies(api_settings: Settings) -> None:
    blocked = pipeline_modules()
    assert {"airflow", "mlflow", "implicit", "pyiceberg", "scipy", "typer"} <= blocked
    port = free_port()
    env = {
        **os.environ,
        "RECSYS_HOME": str(api_settings.home),
        "RECSYS_REDIS_URL": str(api_settings.redis_url),
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
        status, body = get(f"http://127.0.0.1:{port}/v1/users/u1/recommendations?n=5&category=c02")
        assert status == 200 and body["source"] == "personalized" and len(body["items"]) == 5  # type: ignore[arg-type]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "Traceback" not in out, out
