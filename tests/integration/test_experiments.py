"""Champion/challenger: a deterministic split, the challenger served to its share, a report that finds
a planted difference."""

from __future__ import annotations

import pyarrow as pa
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.experiments import experiment_report, in_challenger, new_recommendation_id, wilson
from recommender.keys import Keys
from recommender.lifecycle import publish_model, train_and_register
from recommender.pipeline import experiment, stop_experiment
from recommender.privacy import pseudonymize
from recommender.promotion import promote
from recommender.training import TrainConfig
from serving.app import create_app


def test_the_split_is_deterministic_and_respects_the_share() -> None:
    users = [pseudonymize(f"user-{i}", "secret") for i in range(20_000)]
    first = [in_challenger(u, 0.1) for u in users]
    assert first == [in_challenger(u, 0.1) for u in users]  # the same users every time
    assert abs(sum(first) / len(users) - 0.1) < 0.01
    assert not any(in_challenger(u, 0.0) for u in users) and all(in_challenger(u, 1.0) for u in users)


def planted(served: dict[str, int], clicks: dict[str, int]) -> pa.Table:
    ids, types = [], []
    for version, n in clicks.items():
        lists = [new_recommendation_id(version) for _ in range(served[version])]
        ids += lists[:n] + lists[: n // 2]  # clicks, and add-to-carts on half of the clicked lists
        types += ["view"] * n + ["add_to_cart"] * (n // 2)
    return pa.table({"recommendation_id": [*ids, None], "event_type": [*types, "view"]})


def test_the_report_finds_a_planted_difference_and_not_a_missing_one() -> None:
    served = {"1": 4000, "2": 4000}
    better = experiment_report(planted(served, {"1": 200, "2": 320}), served, "1", "2")
    assert better.production.click_through.rate == 0.05 and better.challenger.click_through.rate == 0.08
    assert better.click_through_p < 0.001 and better.challenger.click_through.low > better.production.click_through.high
    same = experiment_report(planted(served, {"1": 200, "2": 205}), served, "1", "2")
    assert same.click_through_p > 0.5
    interval = wilson(0, 50)
    assert interval.low == 0.0 and 0 < interval.high < 0.1


def test_a_published_challenger_serves_its_share_and_is_counted(shop_settings: Settings) -> None:
    settings = shop_settings.model_copy(update={"experiment_share": 0.3})
    first = train_and_register(settings, TrainConfig(family="itemknn"))
    promote(settings, "production", first.model_version)
    publish_model(settings)
    second = train_and_register(settings, TrainConfig(family="als", params={"factors": 8, "iterations": 3}))
    published = publish_model(settings, alias=None, version=second.model_version, challenger=True)
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    assert (
        r.get(Keys().challenger) == published.version
        and r.hget(Keys().meta(str(r.get(Keys().active))), "model_version") == first.model_version
    )

    users = [f"u{i}" for i in range(200)]
    with TestClient(create_app(settings)) as api:
        answers = {u: api.get(f"/v1/users/{u}/recommendations").json() for u in users}
        event = {
            "user_id": "u1",
            "item_id": "i1",
            "event_type": "view",
            "timestamp": "2025-06-01T00:00:00Z",
            "recommendation_id": answers["u1"]["recommendation_id"],
        }
        assert api.post("/v1/events", json=event).status_code == 202
    on_challenger = {u for u in users if in_challenger(pseudonymize(u, "test-secret"), 0.3)}
    assert 30 < len(on_challenger) < 90
    for user, body in answers.items():
        expected = second.model_version if user in on_challenger else first.model_version
        assert body["model_version"] == expected and body["recommendation_id"].startswith(f"{expected}-")
    counts = r.hgetall(Keys().served)
    assert int(counts[second.model_version]) == len(on_challenger)
    assert int(counts[first.model_version]) == len(users) - len(on_challenger)

    report = experiment(settings)
    assert report["challenger"]["served"] == len(on_challenger) and report["mlflow_run_id"]
    assert stop_experiment(settings)["stopped"] == published.version
    assert r.get(Keys().challenger) is None
    assert "skipped" in experiment(settings)
