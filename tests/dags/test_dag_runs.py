"""Each DAG run in-process (``dag.test``) against a real MLflow server, a real Valkey and real Iceberg tables."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from recommender.config import Settings
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.online.keys import Keys
from recommender.ops.stream import GROUP
from serving.app import create_app
from tests.conftest import SMALL_SHOP_ARGS, write
from tests.dags.conftest import run_dag, task_states

EVENT = {"user_id": "alice", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}
FAST_ALS = {"model": "als", "factors": 16, "iterations": 5}


def asset_events() -> int:
    """How many times the ``interactions`` Asset was updated (Airflow's metadata DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        query = select(func.count()).select_from(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return int(session.scalar(query.where(AssetModel.name == "interactions")) or 0)


def land_shop(settings: Settings) -> None:
    settings.landing.mkdir(parents=True, exist_ok=True)
    write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), settings.landing)


def test_ingest_stores_stream_and_landing_files_once_and_updates_the_asset(dag_env: dict[str, Any]) -> None:
    settings = Settings()
    with TestClient(create_app(settings)) as api:
        assert api.post("/v1/events", json=[EVENT, EVENT | {"item_id": "i2"}]).status_code == 202
    land_shop(settings)
    shop = (settings.landing / "events.csv").read_text().splitlines(keepends=True)
    write(settings.landing / "part2.csv", "".join(shop[:1] + shop[1:101]))  # 100 rows events.csv holds too
    write(
        settings.landing / "part3.csv",
        "event_id,user_id,item_id,event_type,timestamp\ne-new,bob,i3,view,2025-01-02T00:00:00Z\n",
    )
    write(settings.landing / "notes.txt", "not an event file\n")
    before, snapshots = asset_events(), len(Store(settings).events().snapshots())

    run = run_dag("ingest_interactions")

    states = task_states(run)
    assert run.state == "success" and states["announce_interactions"] == "success"
    assert {t for t in states if t.startswith("stage_landing_file")} == {f"stage_landing_file[{i}]" for i in range(4)}
    assert asset_events() == before + 1
    rows = Store(settings).read_events().num_rows
    assert rows == len(shop) - 1 + 2 + 1  # the shop's events once, the two posted ones, part3's new one
    events = Store(settings).events()
    assert len(events.snapshots()) == snapshots + 2  # the drain's commit, and ONE for the landing files
    assert events.current_snapshot().summary["recsys.stored"] == str(len(shop) - 1 + 1)
    assert {p.name for p in settings.landing.iterdir() if p.is_file()} == set()
    processed = sorted(p.name for p in (settings.landing / "processed").iterdir())
    assert len(processed) == 4 and any(n.endswith("catalog.csv") for n in processed)
    assert any(p.name.endswith("notes.txt.error") for p in (settings.landing / "failed").iterdir())
    assert len(Store(settings).read_items()) == SMALL_SHOP_ARGS["items"]

    again = run_dag("ingest_interactions")  # nothing new: nothing stored, no Asset update, no retrain
    assert again.state == "success" and task_states(again)["announce_interactions"] == "skipped"
    assert asset_events() == before + 1
    assert Store(settings).read_events().num_rows == rows


def test_the_audience_refresh_dag_runs_on_its_own_and_says_when_nothing_is_served(dag_env: dict[str, Any]) -> None:
    run = run_dag("refresh_audiences")
    assert run.state == "success" and task_states(run) == {"audiences": "success"}
    ti = run.get_task_instances()[0]
    assert ti.xcom_pull(task_ids="audiences") == {"skipped": "nothing is published yet"}


def test_a_retried_drain_stores_nothing_twice(dag_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with TestClient(create_app(settings)) as api:
        assert (
            api.post("/v1/events", json=[EVENT, EVENT | {"item_id": "i2"}, EVENT | {"item_id": "i3"}]).status_code
            == 202
        )
    real_xack = redis.Redis.xack
    calls = {"n": 0}

    def xack_lost_once(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("worker lost after the Iceberg commit, before XACK")
        return real_xack(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "xack", xack_lost_once)
    before = asset_events()

    # attempt 1 commits, loses its XACK and fails; attempt 2 heals
    run = run_dag("ingest_interactions", retry_delay=timedelta(seconds=1))

    assert run.state == "success" and calls["n"] == 2
    drain = next(ti for ti in run.get_task_instances() if ti.task_id == "drain_event_stream")
    assert drain.try_number == 2
    r = redis.Redis.from_url(dag_env["RECSYS_REDIS_URL"], decode_responses=True)
    assert Store(settings).read_events().num_rows == 3  # stored once
    assert r.xpending(Keys().events, GROUP)["pending"] == 0  # and acknowledged
    assert asset_events() == before + 1  # the first attempt's commit still announces new interactions


def served_model_version(settings: Settings) -> str | None:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    keys = Keys(settings.redis_prefix)
    active = r.get(keys.active)
    return None if active is None else r.hget(keys.meta(active), "model_version")


def test_retrain_gate_and_human_promotion_through_the_dags(
    dag_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recommender.data.ingest import ingest_file

    monkeypatch.setenv("RECSYS_PUBLISH_SHARDS", "3")  # scored by three mapped tasks, then one flip
    settings = Settings()
    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), tmp_path / "shop")
    ingest_file(events, settings, catalog=catalog)
    mlflow = MlflowClient(tracking_uri=dag_env["MLFLOW_TRACKING_URI"], registry_uri=dag_env["MLFLOW_TRACKING_URI"])
    name = settings.model_name

    r = redis.Redis.from_url(dag_env["RECSYS_REDIS_URL"], decode_responses=True)
    category = Store(settings).read_items().column("category")[0].as_py()
    asked = {"top": 20, "asked_at": time.time(), "read_at": time.time()}  # as GET /v1/audiences keeps it
    r.hset(Keys().audiences_wanted, f"category:{category}", json.dumps(asked))
    good = run_dag(
        "retrain_recommender", FAST_ALS | {"half_life_days": 30, "event_weights": {"view": 1, "purchase": 5}}
    )
    states = task_states(good)
    assert good.state == "success" and set(states.values()) == {"success"}
    assert {t for t in states if t.startswith("publish_shard")} == {f"publish_shard[{i}]" for i in range(3)}
    v1 = mlflow.get_model_version_by_alias(name, "production")
    assert mlflow.get_model_version_by_alias(name, "staging").version == v1.version
    run = mlflow.get_run(str(v1.run_id))
    assert run.data.params["model.factors"] == "16" and float(run.data.params["weighting.half_life_days"]) == 30
    assert run.data.metrics["val_ndcg_at_10"] > run.data.metrics["baseline_val_ndcg_at_10"]
    assert served_model_version(settings) == v1.version
    meta = r.hgetall(Keys().meta(str(r.get(Keys().active))))
    assert meta["shards"] == "3" and meta["complete"] == "1" and 0 < float(meta["coverage"]) <= 1
    audience = json.loads(r.hget(Keys().audiences(str(r.get(Keys().active))), f"category:{category}") or "{}")
    assert audience["model_version"] == v1.version and audience["users"] == 20  # the audiences task after publish
    assert len(list(r.scan_iter(match=Keys().ns(str(r.get(Keys().active))) + "user:*"))) == int(meta["users"])

    weak = run_dag("retrain_recommender", {"model": "popular"})  # cannot beat the popularity baseline
    states = task_states(weak)
    assert weak.state == "success"  # a refused gate is an answer, not a failure
    assert states["gate_and_promote"] == "success"
    assert states["publish"] == states["flip_version"] == states["smoke_check"] == "skipped"
    v2 = mlflow.get_model_version_by_alias(name, "staging")
    assert v2.version != v1.version
    assert v2.tags["gate_decision"] == "refused" and "baseline" in v2.tags["gate_reason"]
    assert mlflow.get_model_version_by_alias(name, "production").version == v1.version
    assert served_model_version(settings) == v1.version

    refused = run_dag("promote_model", {"action": "promote", "version": v2.version, "reason": "try it"})
    assert refused.state == "success" and task_states(refused)["publish"] == "skipped"
    assert served_model_version(settings) == v1.version

    forced = run_dag(
        "promote_model", {"action": "promote", "version": v2.version, "reason": "A/B says so", "force": True}
    )
    assert forced.state == "success" and set(task_states(forced).values()) == {"success"}
    assert mlflow.get_model_version(name, v2.version).tags["forced_reason"] == "A/B says so"
    assert served_model_version(settings) == v2.version

    back = run_dag("promote_model", {"action": "rollback", "reason": "worse click-through"})
    assert back.state == "success" and set(task_states(back).values()) == {"success"}
    assert mlflow.get_model_version_by_alias(name, "production").version == v1.version
    assert served_model_version(settings) == v1.version


def test_a_retrain_before_any_ingest_is_skipped_not_failed(dag_env: dict[str, Any]) -> None:
    run = run_dag("retrain_recommender")  # e.g. the weekly run on a new installation
    states = task_states(run)
    assert run.state == "success"
    assert states["pick_snapshot"] == "skipped" and set(states.values()) == {"skipped"}
    assert served_model_version(Settings()) is None
