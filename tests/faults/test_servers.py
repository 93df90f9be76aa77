"""The servers the pipeline depends on go away: Redis restarts with events waiting, MLflow dies mid-retrain."""

from __future__ import annotations

from pathlib import Path

from recommender.config import Settings
from tests.faults import scenarios
from tests.faults.conftest import RestartableRedis
from tests.faults.scenarios import Outage


def test_redis_restarted_with_unacknowledged_events_loses_none_and_stores_none_twice(
    restartable_redis: RestartableRedis, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", hmac_secret="test-secret", redis_url=restartable_redis.url)
    scenarios.redis_restarted_with_pending_events(settings, restartable_redis.restart, rows=20_000)


def test_mlflow_down_during_a_retrain_fails_clearly_and_the_retry_registers_one_version(
    outage: Outage, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        hmac_secret="test-secret",
        mlflow_tracking_uri=outage.url,
        model_name="fault-model",
        experiment="fault-experiment",
    )
    scenarios.mlflow_down_during_retrain(settings, outage.down, outage.up, tmp_path, rows=20_000)
