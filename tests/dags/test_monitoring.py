"""The monitoring DAG fires on a drifted shop (and starts a retrain) and stays quiet on a steady one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recommender.config import Settings
from recommender.data.synthetic import ShopSpec, generate
from tests.conftest import in_production_then_more
from tests.dags.conftest import run_dag, task_states

DAYS, DRIFT_DAY = 60, 45


def shop_in_two_ingests(settings: Settings, folder: Path, drift_from: int | None) -> None:
    """Production trained on the first 45 days; the last 15 days arrive afterwards."""
    events = generate(ShopSpec(users=1500, items=300, events=40_000, seed=5, days=DAYS, drift_from=drift_from)).events
    ts = pd.to_datetime(events.column("timestamp").to_pandas(), utc=True, format="ISO8601")
    in_production_then_more(settings, folder, events, (ts >= ts.min() + pd.Timedelta(days=DRIFT_DAY)).to_numpy())


def monitoring_runs(env: dict[str, Any]) -> list[Any]:
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(f"{env['RECSYS_EXPERIMENT']}-monitoring")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


@pytest.mark.parametrize(("drift_from", "drifted"), [(DRIFT_DAY, True), (None, False)])
def test_drift_fails_a_named_task_and_triggers_a_retrain_only_when_the_data_moved(
    dag_env: dict[str, Any], tmp_path: Path, drift_from: int | None, drifted: bool
) -> None:
    shop_in_two_ingests(Settings(), tmp_path / "shop", drift_from)

    run = run_dag("monitor_recommender")

    states = task_states(run)
    assert states["measure_drift"] == "success"
    [logged] = monitoring_runs(dag_env)
    assert logged.data.tags["drifted"] == str(drifted).lower()
    metrics = logged.data.metrics
    assert "item_popularity_psi" in metrics and "published_age_hours" in metrics
    assert 0 < metrics["served_catalog_coverage"] <= 1
    assert metrics["forward_users"] > 100 and 0 <= metrics["forward_hr_at_10"] <= 1  # production on later data
    if drifted:
        assert run.state == "failed" and states["data_within_thresholds"] == "failed"
        assert states["trigger_retrain"] == "success"
        assert logged.data.metrics["item_popularity_psi"] > Settings().drift_popularity_psi
    else:
        assert run.state == "success" and states["data_within_thresholds"] == "success"
        assert states["trigger_retrain"] == "skipped"
