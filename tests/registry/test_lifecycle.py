"""Train -> MLflow -> gate -> publish -> rollback, against real MLflow (SQLite) and a real Valkey."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.modeling.training import TrainConfig, train
from recommender.registry.lifecycle import (
    load_dataset,
    publish_model,
    recommend,
    rollback_and_republish,
    train_and_register,
)
from recommender.registry.promotion import promote
from recommender.registry.tracking import client

ALS = TrainConfig(family="als", params={"factors": 16, "iterations": 8}, seed=3)


def versions(settings: Settings) -> MlflowClient:
    return client(settings)


def test_train_is_tracked_registered_and_loadable(shop_settings: Settings) -> None:
    out = train_and_register(shop_settings, ALS)
    c = client(shop_settings)
    run = c.get_run(out.run_id)
    m = run.data.metrics
    assert m["test_ndcg_at_10"] > m["baseline_test_ndcg_at_10"] > 0  # the model beats popularity on a planted shop
    assert run.data.params["family"] == "als" and run.data.params["model.factors"] == "16"
    assert run.data.tags["snapshot_id"] == str(out.snapshot_id) and run.data.tags["model_family"] == "als"
    assert run.data.tags["git_commit"]
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == str(out.snapshot_id)[:36]
    artifacts = {a.path for a in c.list_artifacts(out.run_id, "evaluation")}
    assert {"evaluation/metrics_at_k.png", "evaluation/evaluation_test.csv", "evaluation/metrics.json"} <= artifacts
    mv = c.get_model_version_by_alias(shop_settings.model_name, "candidate")
    assert str(mv.version) == out.model_version and mv.run_id == out.run_id

    promote(shop_settings, "production", out.model_version)
    model = mlflow.pyfunc.load_model(f"models:/{shop_settings.model_name}@production")
    user = pseudonymize("u1", "test-secret")
    result = model.predict(pd.DataFrame({"user_id": [user, "stranger"]}), params={"n": 4})
    assert len(result.loc[0, "items"]) == 4 and bool(result.loc[0, "known"])
    assert not bool(result.loc[1, "known"]) and len(result.loc[1, "items"]) == 4  # popular for unknown users


def test_same_snapshot_params_and_seed_give_identical_metrics(shop_settings: Settings) -> None:
    data = load_dataset(shop_settings)
    for config in (ALS, TrainConfig(family="bpr", params={"iterations": 20}, seed=5)):
        a = train(shop_settings, config, data=data).metrics()
        b = train(shop_settings, config, data=data).metrics()
        drop = {k for k in a if k.startswith("seconds_")}
        assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    other = train(shop_settings, TrainConfig(family="als", params=ALS.params, seed=4), data=data).metrics()
    assert other["val_ndcg_at_10"] != a["val_ndcg_at_10"] or other["val_hr_at_10"] != a["val_hr_at_10"]


def test_gate_refuses_worse_promotes_better_and_records_force(shop_settings: Settings) -> None:
    name = shop_settings.model_name
    c = client(shop_settings)
    popular = train_and_register(shop_settings, TrainConfig(family="popular"))
    refused = promote(shop_settings, "production", popular.model_version)
    assert refused.decision == "refused" and "does not beat the popularity baseline" in refused.reason
    with pytest.raises(Exception, match="production"):
        c.get_model_version_by_alias(name, "production")  # production stays as it was: empty
    tags = c.get_model_version(name, popular.model_version).tags
    assert tags["gate_decision"] == "refused"

    good = train_and_register(shop_settings, ALS)
    promote(shop_settings, "staging", good.model_version)
    passed = promote(shop_settings, "production")  # defaults to the staging version
    assert (passed.decision, passed.version) == ("passed", good.model_version)

    weak = train_and_register(shop_settings, TrainConfig(family="als", params={"factors": 4, "iterations": 2}, seed=1))
    assert weak.metrics["val_ndcg_at_10"] < good.metrics["val_ndcg_at_10"] * 0.95
    worse = promote(shop_settings, "production", weak.model_version)
    assert worse.decision == "refused" and "tolerance" in worse.reason
    assert str(c.get_model_version_by_alias(name, "production").version) == good.model_version

    with pytest.raises(ValueError, match="--reason"):
        promote(shop_settings, "production", weak.model_version, force=True)
    forced = promote(shop_settings, "production", weak.model_version, force=True, reason="incident 42")
    assert forced.decision == "forced" and "incident 42" in forced.reason
    tags = c.get_model_version(name, weak.model_version).tags
    assert tags["gate_decision"] == "forced" and tags["forced_reason"] == "incident 42"
    assert str(c.get_model_version_by_alias(name, "production").version) == weak.model_version


def test_publish_serves_every_user_and_rollback_flips_back(shop_settings: Settings) -> None:
    import redis

    first = train_and_register(shop_settings, ALS)
    promote(shop_settings, "production", first.model_version)
    p1 = publish_model(shop_settings)
    r = redis.Redis.from_url(str(shop_settings.redis_url), decode_responses=True)
    keys = [k for k in r.scan_iter(match=f"recsys:v:{p1.version}:user:*", count=1000)]
    assert len(keys) == p1.users > 300
    lists = [json.loads(v) for v in r.mget(keys[:50])]
    assert all(len(x["items"]) == shop_settings.top_n for x in lists)
    assert r.get(f"recsys:v:{p1.version}:popular:cat:c00") is not None and p1.categories > 1
    assert recommend(shop_settings, "u1", 5).source == "personalized"
    assert recommend(shop_settings, "never-seen", 5).source == "popular"

    second = train_and_register(shop_settings, TrainConfig(family="itemknn", params={"K": 50}))
    promote(shop_settings, "production", second.model_version, force=True, reason="test")
    p2 = publish_model(shop_settings)
    assert r.get("{recsys}:active") == p2.version and p2.previous == p1.version

    decision, p3 = rollback_and_republish(shop_settings, "bad release")
    assert decision.version == first.model_version and p3.reused and p3.version == p1.version
    assert r.get("{recsys}:active") == p1.version
    assert str(client(shop_settings).get_model_version_by_alias(shop_settings.model_name, "production").version) == (
        first.model_version
    )
    with pytest.raises(LookupError, match="no previous production"):
        rollback_and_republish(shop_settings, "again")

    p4 = publish_model(shop_settings, version=second.model_version)
    p5 = publish_model(shop_settings, version=second.model_version)
    assert p4.previous == p1.version and p4.removed == [p2.version]  # rollback's list was [p1, p2]
    assert p5.previous == p4.version and p5.removed == [p1.version]
    assert r.lrange("{recsys}:versions", 0, -1) == [p5.version, p4.version]
    for gone in set(r.smembers("{recsys}:versions:started")) - {p4.version, p5.version}:
        raise AssertionError(f"version {gone} was not cleaned up")
    assert not list(r.scan_iter(match=f"recsys:v:{p1.version}:*"))
