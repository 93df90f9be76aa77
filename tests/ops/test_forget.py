"""The right to be forgotten, end to end against real Iceberg tables, a real Valkey and MLflow."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.modeling.training import TrainConfig
from recommender.online.keys import Keys
from recommender.ops.forget import forget_pending, forget_user
from recommender.registry.lifecycle import load_dataset, publish_model, train_and_register
from recommender.registry.promotion import promote
from recommender.registry.tracking import load_bundle
from serving.app import create_app
from tests.conftest import SMALL_SHOP_ARGS

LATE = {"user_id": "u1", "item_id": "i2", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}


def test_a_forgotten_user_is_gone_from_every_table_snapshot_file_redis_and_the_next_model(
    redis_settings: Settings, tmp_path: Path
) -> None:
    settings = redis_settings.model_copy(update={"api_keys": SecretStr("adm:admin,shop:read,page:events")})
    events, catalog = write_shop(generate(ShopSpec(**SMALL_SHOP_ARGS)), tmp_path / "shop")
    ingest_file(events, settings, catalog=catalog)
    extra = tmp_path / "more.csv"
    extra.write_text(
        "user_id,item_id,event_type,timestamp\nu1,i3,purchase,2025-02-01T00:00:00Z\nu1,i4,view,not-a-time\n"
    )
    ingest_file(extra, settings)  # a second snapshot, and a quarantined row of u1
    out = train_and_register(settings, TrainConfig(family="als", params={"factors": 8, "iterations": 3}))
    promote(settings, "production", out.model_version)
    publish_model(settings)
    user = pseudonymize("u1", "test-secret")
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    keys = Keys()
    assert r.get(keys.user(str(r.get(keys.active)), user)) is not None
    assert r.get(keys.bought(str(r.get(keys.active)), user)) is not None  # buy-again: their purchases too

    with TestClient(create_app(settings)) as api:
        assert api.post("/v1/events", json=LATE, headers={"X-API-Key": "page"}).status_code == 202
        assert api.delete("/v1/users/u1").status_code == 401
        assert api.delete("/v1/users/u1", headers={"X-API-Key": "shop"}).status_code == 403
        gone = api.delete("/v1/users/u1", headers={"X-API-Key": "adm"})
        assert gone.status_code == 202 and gone.json()["redis_lists"] >= 1 and gone.json()["stream_entries"] == 1
        listed = api.get("/v1/users/u1/recommendations", headers={"X-API-Key": "shop"}).json()
        assert listed["source"] == "popular"  # at once: no personal list left
    assert list(r.scan_iter(match=f"*{user}*")) == []
    assert r.sismember(keys.forget_pending, user)

    [report] = forget_pending(settings)

    store = Store(settings)
    assert report.tombstoned and report.store["events_rows"] > 1 and report.store["quarantine_rows"] == 1
    assert not r.sismember(keys.forget_pending, user)
    for table in (store.events(), store.quarantine()):
        for snapshot in table.snapshots():  # only the current one is left, and it has no row of theirs
            rows = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=("user_id",)).to_arrow()
            assert user not in set(rows.column("user_id").to_pylist())
    warehouse = Path(settings.home_abs / "warehouse")
    data_files = [p for name in ("events", "quarantine") for p in warehouse.rglob(f"{name}/data/**/*.parquet")]
    assert data_files
    for path in data_files:  # no file on disk holds them either (older snapshots' files were purged)
        column = pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist()
        assert user not in set(column), path

    again = ingest_file(extra, settings)  # a late copy of their events is dropped, not stored
    assert again.forgotten == 2 and again.stored == 0 and again.reconciles
    data = load_dataset(settings)
    assert user not in set(data.inter.vocab.users.tolist())
    retrained = train_and_register(settings, TrainConfig(family="itemknn"))
    promote(settings, "production", retrained.model_version, force=True, reason="after a deletion")
    publish_model(settings)
    bundle, _ = load_bundle(settings)  # the next model holds no vector (no row) for them
    assert user not in set(bundle.vocab.users.tolist()) and len(bundle.vocab.users) > 100
    assert list(r.scan_iter(match=f"*{user}*")) == []


def test_a_retrain_whose_picked_snapshot_a_forget_expired_trains_on_the_newest(shop_settings: Settings) -> None:
    from recommender.ops.pipeline import train_candidate

    picked = Store(shop_settings).current_snapshot_id()
    assert picked is not None
    forget_user(shop_settings, "u1")  # between the DAG's pick_snapshot and train_and_evaluate
    newest = Store(shop_settings).current_snapshot_id()
    assert newest != picked
    trained = train_candidate(shop_settings, {"model": "popular"}, picked)
    assert trained["snapshot_id"] == newest
    with pytest.raises(LookupError, match=f"no snapshot {picked}"):  # asked for by id: no substitute
        train_candidate(shop_settings, {"model": "popular", "snapshot_id": picked}, picked)
