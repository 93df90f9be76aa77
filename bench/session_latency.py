"""Benchmark: from an event's acceptance to a changed recommendation, through the real API.

A small shop is published to an embedded Valkey; the API runs under uvicorn. For each of 300
users: POST one view event, then GET the user's recommendations until the answer says
``source: session`` (it is written synchronously, so the first GET normally shows it); the
time from the POST's response to that GET's response is the latency. Target: p99 < 1 s.
The cost for users without events is measured with ``bench/api_load.py --session-items 0``
against the default (the same request, with and without the session read).

    .venv/bin/python bench/session_latency.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SECRET, UNLIMITED, published_shop
from tests.conftest import free_port


def main() -> None:
    """Print p50 / p99 / max in milliseconds and how many GETs it took."""
    with published_shop("sessionbench-") as (_, _server, settings):
        url = str(settings.redis_url)
        port = free_port()
        env = {
            **os.environ,
            **UNLIMITED,
            "RECSYS_HOME": str(settings.home),
            "RECSYS_REDIS_URL": url,
            "RECSYS_HMAC_SECRET": SECRET,
        }
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--port", str(port)]
        api = subprocess.Popen([*cmd, "--log-level", "warning"], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=10) as http:
                for _ in range(100):
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                latencies, gets = [], []
                for n in range(300):
                    user, item = f"u{n}", f"i{(n * 7) % 150}"
                    event = {
                        "user_id": user,
                        "item_id": item,
                        "event_type": "view",
                        "timestamp": "2025-06-01T00:00:00Z",
                    }
                    assert http.post("/v1/events", json=event).status_code == 202
                    accepted = time.perf_counter()
                    attempts = 1
                    while http.get(f"/v1/users/{user}/recommendations").json()["source"] != "session":
                        attempts += 1
                    latencies.append((time.perf_counter() - accepted) * 1000)
                    gets.append(attempts)
        finally:
            api.terminate()
            api.wait(10)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(
        f"users {len(latencies)}: p50 {statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms, "
        f"max {latencies[-1]:.2f} ms; GETs until changed: max {max(gets)}"
    )


if __name__ == "__main__":
    main()
