"""Benchmark: the real recommendation endpoint versus a bare FastAPI GET of one Redis key.

Same machine, same Redis (an embedded Valkey), same uvicorn worker count, same load tool
(wrk on loopback, bounded duration). Targets: throughput >= 0.9x the bare endpoint's with a filter, a
boost and a pin in force on ``home`` (``with_rules``), p99 latency <= 2x, zero errors. Also measures
the fallback path (Redis stopped), and what the reason on every item costs: the same API with
``RECSYS_REASONS=false`` in the same rounds (target: at most 5% less throughput), and the parse of a
stored list with and without the past items behind it.

    .venv/bin/python bench/api_load.py [--workers 2] [--seconds 10] [--connections 50]

Needs `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SECRET, UNLIMITED, published_shop
from recommender.online.keys import Keys, decode_behind
from recommender.online.live import change_items
from tests.conftest import free_port

BARE_APP = """
import os
from fastapi import FastAPI, Response
from redis.asyncio import BlockingConnectionPool, Redis
app = FastAPI()
pool = BlockingConnectionPool.from_url(os.environ["BENCH_REDIS_URL"], max_connections=256, decode_responses=True)
r = Redis(connection_pool=pool)
@app.get("/bare/{user_id}")
async def bare(user_id: str) -> Response:
    return Response(await r.get(os.environ["BENCH_KEY"]) or "", media_type="application/json")
"""

LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format(wrk.path, counter % 400))
end
"""


def wrk(url_pattern: str, seconds: int, connections: int, script: Path) -> dict[str, float]:
    """Run wrk with a user id rotating over u0..u399; parse throughput, p99 and errors."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url_pattern],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": rps, "p99_ms": round(p99_ms, 2), "errors": errors}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median over rounds (throughput on 2 cores is noisy: uvicorn's workers share load unevenly)."""
    return {k: float(statistics.median(r[k] for r in runs)) for k in runs[0]}


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}/healthz"
                    if "serving" in " ".join(cmd)
                    else f"http://127.0.0.1:{port}/docs",
                    timeout=1,
                ).status_code
                == 200
            ):
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {cmd}")


def _with_live_changes(
    url: str, count: int, targets: dict[str, str], load: tuple[int, int, Path], repeat: int
) -> dict[str, object]:
    """Apply ``count`` live catalog changes (half out of stock, half hidden: 10% of the shop's 150 items and
    the rest on items it does not have, so the lists still fill), then measure the same targets again;
    the cost is the api/bare ratio after over the ratio before."""
    real = [f"i{k}" for k in range(0, 150, 10)]
    names = real + [f"gone-{k}" for k in range(count - len(real))]
    changes = {item: ({"in_stock": False} if k % 2 else {"hidden": True}) for k, item in enumerate(names)}

    async def apply() -> None:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            await change_items(client, Keys(), changes)
        finally:
            await client.aclose()

    asyncio.run(apply())
    time.sleep(0.5)
    rounds = [{name: wrk(target, *load) for name, target in targets.items()} for _ in range(repeat)]
    return {name: _median([rd[name] for rd in rounds]) for name in targets} | {"items_changed": count, "rounds": rounds}


HOME_RULES = {
    "rules": [
        {"kind": "filter", "where": [{"field": "brand", "op": "ne", "value": "b0"}]},
        {"kind": "boost", "where": [{"field": "category", "op": "eq", "value": "c01"}], "factor": 2.0},
        {"kind": "pin", "item_id": "i149", "position": 3},
    ]
}
"""A filter, a boost and a pin in force on ``home`` (the user route): what a shop's merchandisers set."""


def _with_rules(url: str, targets: dict[str, str], load: tuple[int, int, Path], repeat: int) -> dict[str, object]:
    """Put :data:`HOME_RULES` on ``home`` and measure the same targets again (interleaved rounds)."""
    from recommender.online.live import put_rules
    from recommender.online.rules import parse_rules

    async def apply() -> None:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            await put_rules(client, Keys(), "home", parse_rules(HOME_RULES), "bench")
        finally:
            await client.aclose()

    asyncio.run(apply())
    time.sleep(0.5)
    rounds = [{name: wrk(target, *load) for name, target in targets.items()} for _ in range(repeat)]
    medians = {name: _median([rd[name] for rd in rounds]) for name in targets}
    return medians | {"rules": HOME_RULES, "rounds": rounds}


def _parse_cost(stored: str, rounds: int = 20_000) -> dict[str, float]:
    """Microseconds to decode one stored list with the past items behind it, and the same list without them."""
    data = orjson.loads(stored)
    bare = orjson.dumps({"items": data["items"], "scores": data["scores"]})
    out = {}
    for name, value in (("with_reasons", stored.encode()), ("without", bare)):
        start_at = time.perf_counter()
        for _ in range(rounds):
            decode_behind(value)
        out[name] = round((time.perf_counter() - start_at) / rounds * 1e6, 2)
    out["bytes_with"], out["bytes_without"] = len(stored.encode()), len(bare)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--session-items", type=int, default=None, help="RECSYS_SESSION_ITEMS for the API (0: off)")
    parser.add_argument(
        "--live-changes",
        type=int,
        default=0,
        help="then make this many items unavailable live and measure bare / api again (the availability cost)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    with published_shop("apibench-") as (home, server, settings):
        url = str(settings.redis_url)
        r = redis.Redis.from_url(url, decode_responses=True)
        version = str(r.get(Keys().active))
        sample = next(r.scan_iter(match=Keys().ns(version) + "user:*"))
        r.set("bench:payload", str(r.get(sample)))
        script = home / "rotate.lua"
        script.write_text(LUA)
        (home / "bare_app.py").write_text(BARE_APP)
        env = {
            **os.environ,
            **UNLIMITED,
            "RECSYS_HOME": str(settings.home),
            "RECSYS_REDIS_URL": url,
            "RECSYS_HMAC_SECRET": SECRET,
            "BENCH_REDIS_URL": url,
            "BENCH_KEY": "bench:payload",
            "PYTHONPATH": f"{home}:{os.environ.get('PYTHONPATH', '')}",
        }
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        api_port, bare_port = free_port(), free_port()
        metrics_dir = home / "prom"
        metrics_dir.mkdir()
        api = start(
            [*uvicorn, "--factory", "serving.app:create_app", "--port", str(api_port)],
            {
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                **({} if args.session_items is None else {"RECSYS_SESSION_ITEMS": str(args.session_items)}),
            },
            api_port,
        )
        bare = start([*uvicorn, "bare_app:app", "--port", str(bare_port), "--app-dir", str(home)], env, bare_port)
        plain_port = free_port()
        unreasoned = start(
            [*uvicorn, "--factory", "serving.app:create_app", "--port", str(plain_port)],
            {**env, "RECSYS_REASONS": "false"},
            plain_port,
        )
        results: dict[str, object] = {"workers": args.workers, "seconds": args.seconds, "connections": args.connections}
        results["parse_us"] = _parse_cost(str(r.get(sample)))
        try:
            load = (args.seconds, args.connections, script)
            targets = {
                "bare": f"http://127.0.0.1:{bare_port}/bare/u%d",
                "api": f"http://127.0.0.1:{api_port}/v1/users/u%d/recommendations",
                "api_filters": f"http://127.0.0.1:{api_port}/v1/users/u%d/recommendations?exclude=i1,i2,i3&category=c01",
                "api_without_reasons": f"http://127.0.0.1:{plain_port}/v1/users/u%d/recommendations",
            }
            rounds = [{name: wrk(url, *load) for name, url in targets.items()} for _ in range(args.repeat)]
            for name in targets:
                results[name] = _median([r[name] for r in rounds])
            results["rounds"] = rounds
            plain = {k: targets[k] for k in ("bare", "api")}
            results["with_rules"] = _with_rules(url, plain, load, args.repeat)
            if args.live_changes:
                results["live"] = _with_live_changes(url, args.live_changes, plain, load, args.repeat)
            server.stop()  # Redis away: the fallback path
            time.sleep(0.5)
            results["api_fallback"] = wrk(targets["api"], *load)
        finally:
            for process in (api, bare, unreasoned):
                process.terminate()
            for process in (api, bare, unreasoned):
                process.wait(10)
    bare_r, api_r = results["bare"], results["api"]
    assert isinstance(bare_r, dict) and isinstance(api_r, dict)
    results["throughput_ratio"] = round(api_r["rps"] / bare_r["rps"], 3)
    results["p99_ratio"] = round(api_r["p99_ms"] / bare_r["p99_ms"], 3)
    without = results["api_without_reasons"]
    assert isinstance(without, dict)
    results["reasons_cost"] = round(1 - api_r["rps"] / without["rps"], 3)  # target <= 0.05
    ruled = results["with_rules"]
    assert isinstance(ruled, dict)
    ruled["throughput_ratio"] = round(ruled["api"]["rps"] / ruled["bare"]["rps"], 3)
    ruled["p99_ratio"] = round(ruled["api"]["p99_ms"] / ruled["bare"]["p99_ms"], 3)
    live = results.get("live")
    if isinstance(live, dict):  # the availability layer's cost: api/bare with live changes over api/bare without
        live["throughput_ratio"] = round(live["api"]["rps"] / live["bare"]["rps"], 3)
        live["cost"] = round(1 - live["throughput_ratio"] / results["throughput_ratio"], 3)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
