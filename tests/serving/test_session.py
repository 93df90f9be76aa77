"""Real-time session signals: an event changes the user's next answer; other users are unaffected."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.keys import Keys, decode
from recommender.online.session import blend, updated_session
from tests.conftest import SECRET


def test_the_session_keeps_the_newest_distinct_items_first() -> None:
    assert updated_session(["a", "b"], ["c", "a"], keep=3) == ["a", "c", "b"]
    assert updated_session([], ["x"] * 5, keep=3) == ["x"]


def test_blend_ranks_the_recent_items_neighbours_up_and_leaves_the_recent_items_out() -> None:
    base = (["p1", "p2", "p3", "s2"], [4.0, 3.0, 2.0, 1.0])
    ids, scores = blend(base, [(["s1", "s2", "v"], [0.9, 0.8, 0.7])], recent=["v"])
    assert "v" not in ids and ids[0] == "s2"  # in both lists
    assert set(ids) == {"p1", "p2", "p3", "s1", "s2"} and scores == sorted(scores, reverse=True)


def recommend(client: TestClient, user: str) -> dict[str, object]:
    response = client.get(f"/v1/users/{user}/recommendations?n=10")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_an_event_changes_the_next_answer_and_only_that_users(client: TestClient, api_settings: Settings) -> None:
    r = redis.Redis.from_url(str(api_settings.redis_url), decode_responses=True)
    keys = Keys()
    version = str(r.get(keys.active))
    for user in ("u7", "u8"):
        r.delete(keys.session(pseudonymize(user, SECRET)))
    before, other_before = recommend(client, "u7"), recommend(client, "u8")
    assert before["source"] == "personalized"
    viewed = "i5"
    event = {"user_id": "u7", "item_id": viewed, "event_type": "view", "timestamp": "2025-06-01T00:00:00Z"}
    assert client.post("/v1/events", json=event).status_code == 202

    after = recommend(client, "u7")

    items = [i["item_id"] for i in after["items"]]  # type: ignore[index, union-attr]
    assert after["source"] == "session" and items != [i["item_id"] for i in before["items"]]  # type: ignore[index, union-attr]
    assert viewed not in items
    neighbours = set(decode(r.get(keys.similar(version, viewed)))[0][:5])
    assert neighbours & set(items)
    assert r.ttl(keys.session(pseudonymize("u7", SECRET))) > 0
    other_after = recommend(client, "u8")  # a user without events: the same answer as before
    assert (other_after["items"], other_after["source"]) == (other_before["items"], other_before["source"])


def test_a_cold_user_with_an_event_gets_session_recommendations(client: TestClient) -> None:
    event = {"user_id": "brand-new", "item_id": "i9", "event_type": "add_to_cart", "timestamp": "2025-06-01T00:00:00Z"}
    assert client.post("/v1/events", json=event).status_code == 202
    body = recommend(client, "brand-new")
    assert body["source"] == "session" and "i9" not in [i["item_id"] for i in body["items"]]  # type: ignore[union-attr]
