"""The arrangement stage against a real Redis: a cold worker reads the details it needs once, and its
verdict memo never keeps what it judged before it had them."""

from __future__ import annotations

import asyncio

import orjson
import redis
from redis.asyncio import Redis

from recommender.config import Settings
from recommender.online.guard import Guard
from recommender.online.keys import Keys
from recommender.online.listing import POPULAR, arranged
from recommender.online.livestate import LiveState
from recommender.online.rules import parse_rules
from recommender.online.versions import Versions, VersionState

RULES = parse_rules(
    {
        "rules": [
            {"kind": "filter", "where": [{"field": "brand", "op": "ne", "value": "b0"}]},
            {"kind": "boost", "where": [{"field": "category", "op": "eq", "value": "c1"}], "factor": 3.0},
        ]
    }
)


def test_a_cold_worker_reads_details_then_judges_as_a_warm_one(redis_settings: Settings) -> None:
    """Items of brand b0 are filtered out and c1 is boosted from the very first request, when the worker
    holds no details yet; the second request (details cached, verdicts memoized) gives the same list."""
    keys = Keys()
    items = {f"i{k}": {"brand": f"b{k % 2}", "category": f"c{k % 3}"} for k in range(40)}
    sync = redis.Redis.from_url(str(redis_settings.redis_url))
    sync.hset(keys.items("v1"), mapping={i: orjson.dumps(d) for i, d in items.items()})
    sync.close()
    lists = [([f"i{k}" for k in range(40)], [1.0 - k / 100 for k in range(40)])]
    by_hand = sorted(
        ((i, s * (3.0 if items[i]["category"] == "c1" else 1.0)) for i, s in zip(*lists[0], strict=True)
         if items[i]["brand"] != "b0"),
        key=lambda p: -p[1],
    )[:5]  # fmt: skip

    async def twice() -> tuple[list[dict[str, object]], list[dict[str, object]], int]:
        client = Redis.from_url(str(redis_settings.redis_url), decode_responses=True)
        try:
            versions = Versions(client, keys, Guard(1.0), item_cache_size=1000)
            state, live = VersionState("v1", "1", 0.0, frozenset(), frozenset(), {}), LiveState()
            cold = await arranged(versions, live, state, lists, RULES, 5, frozenset(), False, [POPULAR])
            read = len(state.details)
            warm = await arranged(versions, live, state, lists, RULES, 5, frozenset(), False, [POPULAR])
            return cold, warm, read
        finally:
            await client.aclose()

    cold, warm, read = asyncio.run(twice())
    assert [(i["item_id"], i["score"]) for i in cold] == by_hand
    assert warm == cold
    assert read == 40  # the candidates' details, read in one go after the first pass noted them missing
