"""Benchmark: peak memory and time of `recsys generate` and `recsys ingest` on a large shop.

Each step runs as its own child process and reports its peak RSS (``ru_maxrss`` from ``wait4``),
so the figures are what an operator would see. The baseline, measured in the same run: pyarrow
streaming the same CSV into Parquet files and nothing else (the floor any ingest pays for
parsing and writing). A second ingest of the same file measures deduplication against every
stored event (everything is a duplicate). Targets: peak RSS <= 2 GB for each step at 20M rows.

    .venv/bin/python bench/ingest_memory.py --users 1000000 --items 100000 --events 20000000
    .venv/bin/python bench/ingest_memory.py --events 2000000 --users 100000 --items 20000   # a quick run
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
    a = parser.parse_args()
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


if __name__ == "__main__":
    main()
