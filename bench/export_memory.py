"""Benchmark: peak memory and time of `recsys export` at a big shop's user count.

A small shop is trained and published for real (ALS, lists of 50), then its user lists are copied in Redis to
``--users`` pseudonyms, so the served version holds that many lists as publishing writes them. Then, each as
its own child process reporting its peak RSS (``ru_maxrss`` from ``wait4``):

* the baseline, measured in the same run: a plain pass that scans the same keys, decodes each list and writes
  the rows to Parquet with pyarrow (no rules, availability or reasons; no commit);
* `recsys export -n 50` into the Iceberg table, and `--to DIR` as Parquet files.

Target: peak RSS <= 2 GB at 1M users x 50 items.

    .venv/bin/python bench/export_memory.py --users 1000000
    .venv/bin/python bench/export_memory.py --users 100000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE = """
import sys, orjson, redis, pyarrow as pa, pyarrow.parquet as pq
r = redis.Redis.from_url(sys.argv[1])
prefix, out = sys.argv[2], sys.argv[3]
writer, rows, part = None, {"user_id": [], "item_id": [], "rank": [], "score": []}, 0
def flush():
    global rows, part
    pq.write_table(pa.table(rows), f"{out}/part-{part:05d}.parquet"); part += 1
    rows = {k: [] for k in rows}
keys = []
for key in r.scan_iter(match=prefix + "user:*", count=1000):
    keys.append(key)
    if len(keys) == 1000:
        for key, value in zip(keys, r.mget(keys)):
            data = orjson.loads(value)
            user = key.decode().rsplit("{", 1)[1][:-1]
            for rank, (item, score) in enumerate(zip(data["items"], data["scores"]), start=1):
                rows["user_id"].append(user); rows["item_id"].append(item)
                rows["rank"].append(rank); rows["score"].append(score)
        keys = []
        if len(rows["user_id"]) >= 500_000:
            flush()
flush()
"""


def prepare(home: Path, url: str, users: int) -> None:
    """Train and publish a small shop, then copy its user lists to ``users`` pseudonyms; prints the version.

    In a child process: this one stays small, so its children's peak RSS is their own (a forked child counts
    its parent's pages until it execs)."""
    import redis

    from recommender.config import Settings
    from recommender.data.ingest import ingest_file
    from recommender.data.synthetic import ShopSpec, generate, write_shop
    from recommender.modeling.training import TrainConfig
    from recommender.online.keys import Keys
    from recommender.registry.lifecycle import publish_model, train_and_register
    from recommender.registry.promotion import promote

    settings = Settings(home=home, redis_url=url, hmac_secret="bench-secret", top_n=50, publish_batch=2_000)
    events, catalog = write_shop(generate(ShopSpec(users=2_000, items=500, events=60_000, seed=3)), home / "shop")
    ingest_file(events, settings, catalog=catalog)
    out = train_and_register(settings, TrainConfig(family="als", params={"factors": 16, "iterations": 5}))
    promote(settings, "production", out.model_version)
    publish_model(settings)
    r = redis.Redis.from_url(url)
    keys = Keys(settings.redis_prefix)
    version = r.get(keys.active).decode()  # type: ignore[union-attr]
    published = list(r.scan_iter(match=keys.ns(version) + "user:*", count=1000))
    values = r.mget(published)
    pipe = r.pipeline(transaction=False)
    for k in range(users):
        pipe.set(keys.user(version, f"{k:032x}"), values[k % len(values)])  # type: ignore[arg-type]
        if k % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    for key in published:  # only the copies: the export's users are exactly --users
        r.delete(key)
    print(keys.ns(version))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--redis-url", default=os.environ.get("RECSYS_REDIS_URL"))
    parser.add_argument("--prepare", nargs=2, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.prepare:
        prepare(Path(a.prepare[0]), a.prepare[1], a.users)
        return
    from bench.ingest_memory import run
    from bench.train_publish import _redis

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp, _redis(a.redis_url, Path(tmp)) as url:
        home = Path(tmp) / "home"
        env = {
            **os.environ,
            "RECSYS_HOME": str(home),
            "RECSYS_REDIS_URL": url,
            "RECSYS_HMAC_SECRET": "bench-secret",
            "OPENBLAS_NUM_THREADS": "1",
        }
        seconds, _, out = run([sys.executable, __file__, "--users", str(a.users), "--prepare", str(home), url], env)
        prefix = out.strip().splitlines()[-1]
        print(f"{a.users:,} user lists of 50 under {prefix} ({seconds:.0f} s)", file=sys.stderr)
        base = Path(tmp) / "baseline"
        base.mkdir()
        results = {"baseline": run([sys.executable, "-c", BASELINE, url, prefix, str(base)], env)}
        cli = [str(REPO / ".venv/bin/recsys"), "export", "-n", "50", "--json"]
        results["table"] = run(cli, env)
        results["files"] = run([*cli, "--to", str(Path(tmp) / "files")], env)
        rows = {name: json.loads(out.strip().splitlines()[-1])["rows"] for name, (_, _, out) in results.items() if out}
        print(f"| step ({a.users:,} users x 50) | seconds | peak RSS | vs the plain pass |")
        print("|---|---|---|---|")
        floor = results["baseline"][0]
        for name, (seconds, gb, _) in results.items():
            print(f"| {name} | {seconds:.0f} | {gb:.2f} GB | {seconds / floor:.1f}x |")
        print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
