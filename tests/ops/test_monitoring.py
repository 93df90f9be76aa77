"""Monitoring at the edges: right after a retrain (nothing newer than the model), and after a forget
expired the production model's training snapshot. Through `recsys monitor`, as an operator runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recommender.cli import app
from recommender.config import Settings, get_settings
from recommender.data.profile import ARTIFACT, Profile
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate
from recommender.ops.forget import forget_user
from recommender.registry.tracking import client
from tests.conftest import in_production_then_more

runner = CliRunner()


@pytest.fixture
def env(redis_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The CLI's environment on ``redis_settings``."""
    monkeypatch.setenv("RECSYS_HOME", str(redis_settings.home))
    monkeypatch.setenv("RECSYS_REDIS_URL", str(redis_settings.redis_url))
    monkeypatch.setenv("RECSYS_HMAC_SECRET", "test-secret")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def monitor_json(*flags: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["monitor", "--json", *flags])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return result.exit_code, json.loads(lines[0])


def in_production(settings: Settings, tmp_path: Path, later_days: int) -> None:
    """A shop whose last ``later_days`` arrive after the production model was trained and published."""
    events = generate(ShopSpec(users=600, items=150, events=15_000, seed=8, days=40)).events
    ts = pd.to_datetime(events.column("timestamp").to_pandas(), utc=True)
    in_production_then_more(settings, tmp_path, events, (ts > ts.max() - pd.Timedelta(days=later_days)).to_numpy())


def test_right_after_a_retrain_monitoring_reports_that_nothing_is_newer(env: Settings, tmp_path: Path) -> None:
    in_production(env, tmp_path, later_days=0)
    code, report = monitor_json()
    assert code == 0 and not report["drifted"]
    assert report["measures"]["forward_users"] == 0 and "forward_hr_at_10" not in report["measures"]
    assert report["experiment"] == {"skipped": "no challenger is published (recsys publish --challenger)"}
    human = runner.invoke(app, ["monitor"])
    assert human.exit_code == 0 and "within every band" in human.stdout and "forward_users" in human.stdout


def test_monitoring_survives_a_forget_that_expired_the_training_snapshot(env: Settings, tmp_path: Path) -> None:
    in_production(env, tmp_path, later_days=10)
    store = Store(env)
    trained_on = int(client(env).get_model_version(env.model_name, "1").tags["snapshot_id"])
    _, before = monitor_json()

    forget_user(env, "u1")  # expires every snapshot but the newest: the model's own is gone

    assert trained_on not in {s.snapshot_id for s in store.snapshots()}
    code, after = monitor_json("--fail-on-drift")
    assert code == (3 if after["drifted"] else 0)
    assert after["reference_snapshot"] == trained_on and after["measures"]["forward_users"] > 0
    for measure in ("item_popularity_psi", "event_type_psi", "volume_ratio", "reference_events"):
        assert after["measures"][measure] == pytest.approx(before["measures"][measure], rel=0.05), measure
    run_id = client(env).get_model_version(env.model_name, "1").run_id
    logged = Profile.from_dict(json.loads((Path(client(env).download_artifacts(run_id, ARTIFACT))).read_text()))
    assert logged.snapshot_id == trained_on and logged.events == after["measures"]["reference_events"]
