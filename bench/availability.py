"""Benchmark: from a catalog update's 2xx to the item's absence from every answer, through the real API.

A small shop is published to an embedded Valkey; the API runs under uvicorn with two workers
(each polls the live counter every ``RECSYS_LIVE_POLL_SECONDS``, 0.1 s by default). For each of
200 items that some user is shown: PATCH it out of stock, then ask the user's recommendations,
the similar list of a neighbour that lists it, and the popular list, again and again, until three
answers of each in a row, each on a new connection (so any worker), leave it out; the time from the PATCH's response to
the first answer of that run is the latency. Then restock it the same way. Target: p99 < 1 s.

Then a new item, the same way, for ``--new-items`` items: PATCHed with the attributes of an item the
model knows (its title changed), until its own product page shows the content model's first pick
and the product page of the item it most likely follows shows it; then hidden (the next takes its
slot). Target: within a second, like the
availability changes of the same run.

    .venv/bin/python bench/availability.py [--items 200] [--new-items 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SECRET, UNLIMITED, latencies, published_shop, wait_ready
from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys
from recommender.registry.newitems import published_index
from tests.conftest import free_port

KEY = "bench-writer"
RUN = 3  # answers in a row, per endpoint, that must agree


def _lists(r: redis.Redis, version: str, key: str) -> list[str]:
    value = r.get(key)
    return list(orjson.loads(value)["items"]) if value else []


def _probes(r: redis.Redis, keys: Keys, version: str, count: int) -> list[tuple[str, list[str]]]:
    """(item, the URLs whose answers show it now) for ``count`` items (none the catalog has unavailable)."""
    unavailable = set(r.smembers(keys.out_of_stock(version))) | set(r.smembers(keys.hidden(version)))
    popular = _lists(r, version, keys.popular(version))
    shown = 10 - Settings().new_items_per_list  # the served list may carry new items before these
    similar = {
        i: [s for s in _lists(r, version, keys.similar(version, i)) if s not in unavailable][:shown] for i in popular
    }
    out: list[tuple[str, list[str]]] = []
    for n in range(400):
        user = f"u{n}"
        mine = [i for i in _lists(r, version, keys.user(version, pseudonymize(user, SECRET))) if i not in unavailable][
            :10
        ]
        for item in mine:
            holder = next((i for i, lst in similar.items() if item in lst), None)
            if holder and item not in {p for p, _ in out}:
                urls = [f"/v1/users/{user}/recommendations?n=10", f"/v1/items/{holder}/similar?n=10"]
                if item in [p for p in popular if p not in unavailable][:50]:
                    urls.append("/v1/popular?n=50")
                out.append((item, urls))
                break
        if len(out) == count:
            break
    return out


def _shows(http: httpx.Client, url: str, item: str) -> bool:
    return item in {i["item_id"] for i in http.get(url).json()["items"]}


def _until(http: httpx.Client, item: str, urls: list[str], present: bool) -> float:
    """Seconds until a run of answers (``RUN`` per URL, so every worker) all show ``item`` present / absent;
    the time is taken when that run started."""
    return _until_all(http, [(url, item) for url in urls], present)


def _until_all(http: httpx.Client, checks: list[tuple[str, str]], present: bool) -> float:
    """:func:`_until` for (URL, item) pairs."""
    start = time.perf_counter()
    while True:
        began = time.perf_counter() - start
        if all(_shows(http, url, item) == present for url, item in checks for _ in range(RUN)):
            return began
        if began > 30:
            raise SystemExit(f"{checks} still {'absent' if present else 'present'} after 30 s")


def _new_items(
    r: redis.Redis, keys: Keys, version: str, count: int
) -> list[tuple[str, dict[str, object], list[tuple[str, str]]]]:
    """(new item, its PATCH body, the (URL, item) pairs that show it placed) for ``count`` new items."""
    index = published_index(r, keys, version)
    unavailable = set(r.smembers(keys.out_of_stock(version))) | set(r.smembers(keys.hidden(version)))
    known = [index.ids[p] for p in np.flatnonzero(index.modelled & ~index.new)]
    out = []
    for k, model in enumerate(known[:count]):
        details = orjson.loads(r.hget(keys.items(version), model) or "{}")
        item = f"bench-new-{k}"
        extra = {a: v for a, v in details.items() if a not in {"title", "category", "price", "in_stock", "hidden"}}
        change = {"title": f"{details.get('title')} refill", "category": details.get("category")}
        vector, bias, after = index.encode({**change, **extra})
        first = next(i for i in index.follows(after, 20, item)[0] if i not in unavailable)
        page = index.pages(vector, bias, 1)[0][0]
        checks = [
            (f"/v1/placements/product?item_id={item}&n=8", first),
            (f"/v1/placements/product?item_id={page}&n=8", item),
        ]
        out.append((item, {**change, "attributes": extra}, checks))
    return out


def main() -> None:
    """Print p50 / p99 / max of both directions in milliseconds as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--new-items", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with published_shop("availabilitybench-") as (_, _server, settings):
        url = str(settings.redis_url)
        r = redis.Redis.from_url(url, decode_responses=True)
        keys = Keys()
        version = str(r.get(keys.active))
        probes = _probes(r, keys, version, args.items)
        new = _new_items(r, keys, version, args.new_items)
        port = free_port()
        env = {
            **os.environ,
            **UNLIMITED,
            "RECSYS_HOME": str(settings.home),
            "RECSYS_REDIS_URL": url,
            "RECSYS_HMAC_SECRET": SECRET,
            "RECSYS_API_KEYS": f"{KEY}:write",
            "RECSYS_OPEN_READS": "true",
        }
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--port", str(port)]
        api = subprocess.Popen([*cmd, "--workers", str(args.workers), "--log-level", "warning"], env=env)
        gone, back, placed = [], [], []
        try:
            fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request: any worker answers
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10, headers={"X-API-Key": KEY}, limits=fresh) as http:
                wait_ready(http)
                for item, urls in probes:
                    assert http.patch(f"/v1/items/{item}", json={"in_stock": False}).status_code == 200
                    gone.append(_until(http, item, urls, present=False) * 1000)
                    assert http.patch(f"/v1/items/{item}", json={"in_stock": True}).status_code == 200
                    back.append(_until(http, item, urls, present=True) * 1000)
                for item, body, checks in new:
                    assert http.patch(f"/v1/items/{item}", json=body).status_code == 200
                    placed.append(_until_all(http, checks, present=True) * 1000)
                    http.patch(f"/v1/items/{item}", json={"hidden": True})  # leaves the page's slots to the next
        finally:
            api.terminate()
            api.wait(10)

    print(
        json.dumps(
            {
                "items": len(probes),
                "workers": args.workers,
                "unavailable": latencies(gone),
                "restocked": latencies(back),
                "new_items": len(new),
                "new_item_placed": latencies(placed),
            }
        )
    )


if __name__ == "__main__":
    main()
