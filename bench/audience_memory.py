"""Benchmark: what one stored audience member costs in Redis (docs/scaling.md, *audiences*).

An embedded Valkey holds one ZSET of ``--members`` random 32-character pseudonyms with float scores, as
the audience job stores them (``recommender.online.audiences.store_audience``); ``MEMORY USAGE`` of the
key divided by the members is the figure.

    .venv/bin/python bench/audience_memory.py [--members 10000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.online.audiences import Stored, store_audience
from recommender.online.keys import Keys
from recommender.online.redis_conn import start_valkey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    a = parser.parse_args()
    keys = Keys()
    with tempfile.TemporaryDirectory() as tmp:
        node = start_valkey(data_dir=Path(tmp))
        try:
            r = redis.Redis(port=node.port, decode_responses=True)
            users = [secrets.token_hex(16) for _ in range(a.members)]
            scores = [k / 7 for k in range(a.members)]
            store_audience(r, keys, "v1", "item:i1", Stored(a.members, a.members, "1", "als", 1, 0.0), users, scores)
            used = int(r.memory_usage(keys.audience("v1", "item:i1")) or 0)
        finally:
            node.stop()
    print(json.dumps({"members": a.members, "bytes": used, "bytes_per_member": round(used / a.members, 1)}))


if __name__ == "__main__":
    main()
