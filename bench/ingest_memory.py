"""Benchmark: peak memory and time of `recsys generate` and `recsys ingest` on a large shop.

Each step runs as its own child process and reports its peak RSS (``ru_maxrss`` from ``wait4``),
so the figures are what an operator would see. The baseline, measured in the same run: pyarrow
streaming the same CSV into Parquet files and nothing else (the floor any ingest pays for
parsing and writing). A second ingest of the same file measures deduplication against every
stored event (everything is a duplicate). Targets: peak RSS <= 2 GB for each step at 20M rows.

    .venv/bin/python bench/ingest_memory.py --users 1000000 --items 100000 --events 20000000
    .venv/bin/python bench/ingest_memory.py --events 2000000 --users 100000 --items 20000   # a quick run

With ``--existing N`` it measures instead what an ingest costs against a big table: the same new file
(``--events``, one month of ``--days 28``) into an empty table, and into a table already holding N rows spread
over ``--months`` months before it, written by one append per month (so the newest append, which every ingest
also reads, is a month's). Target: at most 1.3x the time of the first and the same memory.

    .venv/bin/python bench/ingest_memory.py --events 1000000 --existing 40000000 --days 28
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = """
import sys, pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
reader = pacsv.open_csv(sys.argv[1], read_options=pacsv.ReadOptions(block_size=1 << 24),
                        convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=True))
for n, batch in enumerate(reader):
    pq.write_table(pa.Table.from_batches([batch]), f"{sys.argv[2]}/part-{n:05d}.parquet")
"""

EXISTING = """
import sys, uuid, numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from datetime import datetime, UTC
from recommender.config import Settings
from recommender.data.events import EVENT_SCHEMA
from recommender.data.store import Store
rows, months = int(sys.argv[1]), int(sys.argv[2])
table = Store(Settings()).events()
rng = np.random.default_rng(0)
text = lambda values: pc.cast(pa.array(values), pa.string())
users = pa.array([uuid.UUID(int=int(u)).hex for u in rng.integers(0, 2**62, 1_000_000)], pa.large_string())
first = 2023 * 12 - months  # the months before January 2023, where the new file falls
for k in range(months):
    m = first + k
    lo = datetime(m // 12, m % 12 + 1, 1, tzinfo=UTC).timestamp()
    hi = datetime((m + 1) // 12, (m + 1) % 12 + 1, 1, tzinfo=UTC).timestamp()
    n = rows // months + (k < rows % months)
    ids = pc.binary_join_element_wise(f"old{k}-", text(np.arange(n)), "")
    at = pa.array((rng.uniform(lo, hi - 1, n) * 1e6).astype("int64")).cast(pa.timestamp("us", tz="UTC"))
    part = pa.table({
        "event_id": ids, "user_id": users.take(pa.array(rng.integers(0, len(users), n))),
        "item_id": pc.binary_join_element_wise("i", text(rng.integers(0, 100_000, n)), ""),
        "event_type": pa.array(["view"] * n, pa.large_string()), "timestamp": at,
        "session_id": pa.nulls(n, pa.large_string()), "quantity": pa.nulls(n, pa.int32()),
        "price": pa.nulls(n, pa.float64()), "recommendation_id": pa.nulls(n, pa.large_string()),
        "source": pa.array(["bench"] * n, pa.large_string()), "ingest_id": pa.array([f"old{k}"] * n, pa.large_string()),
    }).select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
    uri = f"{table.location()}/data/month={m // 12:04d}-{m % 12 + 1:02d}/bench-{k:03d}.parquet"
    path = uri.removeprefix("file://")
    __import__("os").makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    pq.write_table(part, path)
    table.add_files([uri])  # one append per month
    table = table.refresh()
print(sum(1 for _ in table.snapshots()))
"""


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child; returns (seconds, peak RSS in GB, stdout)."""
    started = time.monotonic()
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(args[:4])} failed with status {status}")
    return time.monotonic() - started, usage.ru_maxrss / 1024**2, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--existing", type=int, default=0, help="Rows already in the table (0: the 20M run).")
    parser.add_argument("--months", type=int, default=36, help="Months the existing rows spread over.")
    parser.add_argument("--days", type=int, default=60, help="Days the new events span.")
    a = parser.parse_args()
    if a.existing:
        big_table(a)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        home, shop, parquet = Path(tmp) / "home", Path(tmp) / "shop", Path(tmp) / "parquet"
        parquet.mkdir()
        env = {
            **os.environ,
            "RECSYS_HOME": str(home),
            "RECSYS_HMAC_SECRET": "bench-secret",
            "OPENBLAS_NUM_THREADS": "1",
        }
        cli = [sys.executable, "-m", "recommender.cli"]
        sizes = ["--users", str(a.users), "--items", str(a.items), "--events", str(a.events)]
        steps: dict[str, tuple[float, float]] = {}
        seconds, rss, _ = run([*cli, "generate", "--out", str(shop), *sizes, "--json"], env)
        steps["generate"] = (seconds, rss)
        events = shop / "events.csv"
        seconds, rss, _ = run([sys.executable, "-c", BASELINE, str(events), str(parquet)], env)
        steps["baseline: pyarrow CSV -> Parquet"] = (seconds, rss)
        seconds, rss, out = run([*cli, "ingest", str(events), "--json"], env)
        first = json.loads(out.strip().splitlines()[-1])
        steps["ingest (empty table)"] = (seconds, rss)
        seconds, rss, out = run([*cli, "ingest", str(events), "--json"], env)
        second = json.loads(out.strip().splitlines()[-1])
        steps["ingest again (all duplicates)"] = (seconds, rss)
    base = steps["baseline: pyarrow CSV -> Parquet"][0]
    print(f"{a.events:,} events, {a.users:,} users, {a.items:,} items")
    print("| step | seconds | x baseline | peak RSS |")
    print("|---|---|---|---|")
    for name, (seconds, rss) in steps.items():
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f}x | {rss:.2f} GB |")
    print(
        json.dumps(
            {
                "first": {
                    k: first[k] for k in ("read", "stored", "duplicates", "quarantined", "reconciles", "data_files")
                },
                "second": {k: second[k] for k in ("read", "stored", "duplicates", "reconciles")},
            }
        )
    )
    assert first["stored"] == a.events and second["duplicates"] == a.events, "counts do not reconcile"


def big_table(a: argparse.Namespace) -> None:
    """The same new file into an empty table and into one of ``a.existing`` rows over ``a.months`` months."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        shop = Path(tmp) / "shop"
        env = {**os.environ, "RECSYS_HMAC_SECRET": "bench-secret", "OPENBLAS_NUM_THREADS": "1"}
        cli = [sys.executable, "-m", "recommender.cli"]
        sizes = ["--users", str(a.users), "--items", str(a.items), "--events", str(a.events), "--days", str(a.days)]
        run([*cli, "generate", "--out", str(shop), *sizes, "--json"], {**env, "RECSYS_HOME": str(Path(tmp) / "g")})
        events = shop / "events.csv"
        steps: dict[str, tuple[float, float]] = {}
        summaries = {}
        for name, existing in (("empty table", 0), (f"table of {a.existing:,} rows", a.existing)):
            home = {**env, "RECSYS_HOME": str(Path(tmp) / f"home-{existing}")}
            if existing:
                started = time.monotonic()
                run([sys.executable, "-c", EXISTING, str(existing), str(a.months)], home)
                print(f"wrote {existing:,} rows over {a.months} months in {time.monotonic() - started:.0f} s")
            seconds, rss, out = run([*cli, "ingest", str(events), "--json"], home)
            steps[f"ingest {a.events:,} new rows into an {name}" if not existing else f"ingest into a {name}"] = (
                seconds,
                rss,
            )
            summaries[name] = json.loads(out.strip().splitlines()[-1])
    base = next(iter(steps.values()))[0]
    print(f"{a.events:,} new events over {a.days} days; existing rows over {a.months} months, one append per month")
    print("| step | seconds | x into the empty table | peak RSS |")
    print("|---|---|---|---|")
    for name, (seconds, rss) in steps.items():
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f}x | {rss:.2f} GB |")
    keep = ("read", "stored", "duplicates", "reused_ids", "reconciles")
    print(json.dumps({name: {k: s.get(k) for k in keep} for name, s in summaries.items()}))
    assert all(s["stored"] == a.events for s in summaries.values()), "counts do not reconcile"


if __name__ == "__main__":
    main()
