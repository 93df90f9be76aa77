"""Session events re-scored by the sequential model's numpy forward pass inside the API."""

from __future__ import annotations

import base64

import orjson
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.erasure import forget_in_redis
from recommender.online.keys import Keys, decode
from recommender.online.sequence import SequenceScorer
from serving.app import create_app
from tests.conftest import SECRET


def test_session_events_are_re_scored_with_the_sequence_that_includes_them(sequential_settings: Settings) -> None:
    r = redis.Redis.from_url(str(sequential_settings.redis_url), decode_responses=True)
    keys = Keys()
    version = str(r.get(keys.active))
    user = next(f"u{i}" for i in range(400) if r.exists(keys.sequence(version, pseudonymize(f"u{i}", SECRET))))
    pseudonym = pseudonymize(user, SECRET)
    past = orjson.loads(str(r.get(keys.sequence(version, pseudonym))))  # publishing stored their newest items
    scorer = SequenceScorer.from_bytes(base64.b64decode(str(r.get(keys.sequence_model(version)))))
    unavailable = r.smembers(keys.out_of_stock(version)) | r.smembers(keys.hidden(version))
    with TestClient(create_app(sequential_settings)) as client:
        before = client.get(f"/v1/users/{user}/recommendations?n=10").json()
        assert before["source"] == "personalized"
        assert [i["item_id"] for i in before["items"]] == [
            i for i in decode(r.get(keys.user(version, pseudonym)))[0] if i not in unavailable
        ][:10]  # no events: the precomputed list, untouched
        viewed = [i["item_id"] for i in before["items"][:2]]  # its top two: the answer must change
        for k, item in enumerate(viewed):
            event = {"user_id": user, "item_id": item, "event_type": "view", "timestamp": f"2025-06-01T00:0{k}:00Z"}
            assert client.post("/v1/events", json=event).status_code == 202
        after = client.get(f"/v1/users/{user}/recommendations?n=10").json()
    expected, _ = scorer.top([*past, *viewed], 200)
    assert after["source"] == "session"
    assert [i["item_id"] for i in after["items"]] == [i for i in expected if i not in unavailable][:10]
    assert not set(viewed) & {i["item_id"] for i in after["items"]}


def test_forgetting_a_user_deletes_their_stored_sequence(sequential_settings: Settings) -> None:
    r = redis.Redis.from_url(str(sequential_settings.redis_url), decode_responses=True)
    keys = Keys()
    version = str(r.get(keys.active))
    pseudonym = next(p for i in range(400) if r.exists(keys.sequence(version, p := pseudonymize(f"u{i}", SECRET))))
    forget_in_redis(r, keys, pseudonym)  # what DELETE /v1/users/{id} runs
    assert not r.exists(keys.sequence(version, pseudonym))
    assert not list(r.scan_iter(match=f"*{pseudonym}*"))
