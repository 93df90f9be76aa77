"""Automatic model selection: no leakage of the test item, a budget that holds, and a winner above popularity."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from recommender.config import Settings
from recommender.modeling import selection
from recommender.modeling.matrix import events_before_latest
from recommender.modeling.selection import search
from recommender.modeling.training import Dataset, default_weighting, fit_and_score
from recommender.registry.lifecycle import load_dataset


@pytest.fixture
def shop_data(shop_settings: Settings) -> Dataset:
    return load_dataset(shop_settings)


def test_planting_the_test_item_in_training_changes_the_result(shop_data: Dataset, shop_settings: Settings) -> None:
    split, weighting = shop_data.split, default_weighting(shop_settings)
    _, clean = fit_and_score(shop_data, split.train_val, split.test_items, "itemknn", {}, 0, weighting, 10)
    planted = split.train_val | ~split.train_val  # every event, the test items' included
    _, leaked = fit_and_score(shop_data, planted, split.test_items, "itemknn", {}, 0, weighting, 10)
    assert clean.metrics["hr_at_10"] > 0.05
    assert leaked.metrics["hr_at_10"] == 0.0  # a seen item is filtered: the protocol would notice the leak


def test_the_test_item_never_reaches_the_search(
    shop_data: Dataset, shop_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = selection.fit_and_score

    def spy(data: Dataset, mask: np.ndarray, targets: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.append((mask, targets))
        return real(data, mask, targets, *args, **kwargs)

    monkeypatch.setattr(selection, "fit_and_score", spy)
    found = search(shop_settings, shop_data, budget_seconds=60, max_trials=6, sequential_seconds=3)
    test_events = ~shop_data.split.train_val
    assert len(seen) >= 6 and test_events.any()
    assert {"sequential", "blend"} <= {t.family for t in found.trials}  # the sequential trial early-stopped on val
    for mask, targets in seen:
        assert not (mask & test_events).any()  # never trained on a test item's events
        assert np.array_equal(targets, shop_data.split.val_items)  # and scored on the validation item only


def test_the_search_stops_at_its_trial_cap_and_its_time_budget(shop_data: Dataset, shop_settings: Settings) -> None:
    capped = search(shop_settings, shop_data, budget_seconds=600, max_trials=4, sequential_seconds=0)
    assert len(capped.trials) <= 4
    timed = search(shop_settings, shop_data, budget_seconds=0.01, max_trials=1000, sequential_seconds=0)
    assert 1 <= len(timed.trials) < 1000 and timed.budget_seconds == 0.01
    assert selection.budget_for(10_000_000, 420) == 420 and selection.budget_for(12_000, 420) == 20


def test_per_user_recency_counts_events_back_from_each_users_latest() -> None:
    users = np.array([0, 1, 0, 0, 1])  # time-ordered events
    assert events_before_latest(users, 3).tolist() == [2.0, 1.0, 1.0, 0.0, 0.0]


def test_model_auto_beats_popularity_and_nests_its_trials(
    shop_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recommender.cli import app
    from recommender.config import get_settings

    for key, value in {"RECSYS_HOME": str(shop_settings.home), "RECSYS_HMAC_SECRET": "test-secret"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["train", "--model", "auto", "--trials", "12", "--sequential-seconds", "4", "--json"]
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    m = out["metrics"]
    assert m["test_ndcg_at_10"] > 1.5 * m["baseline_test_ndcg_at_10"]
    assert out["family"] != "popular" and out["model_version"] is not None
    client = MlflowClient(tracking_uri=shop_settings.tracking_uri)
    children = client.search_runs(
        [client.get_run(out["run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{out['selection_run_id']}'",
    )
    trials = [r for r in children if r.info.run_name.startswith("trial-")]
    plain = [r for r in trials if r.data.tags["model_family"] not in ("sequential", "blend")]
    assert 8 <= len(plain) <= 12  # a repeated popularity trial is pruned, not logged
    sequential = [r for r in trials if r.data.tags["model_family"] == "sequential"]
    assert len(sequential) == 1 and sequential[0].data.params["model.hidden"] == "64"  # its defaults, first
    assert [r.data.tags["model_family"] for r in trials].count("blend") == 1
    curve = client.get_metric_history(sequential[0].info.run_id, "epoch_val_ndcg_at_10")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and curve  # the learning curve, per epoch
    assert any(r.info.run_id == out["run_id"] for r in children)  # the winner, registered, nested too
    assert all("val_ndcg_at_10" in r.data.metrics for r in trials)


@pytest.mark.parametrize("family", ["itemknn", "als", "bpr"])
def test_explanations_add_up_to_the_score_and_name_past_items(shop_data: Dataset, family: str) -> None:
    from recommender.modeling.families import make_model
    from recommender.modeling.matrix import confidence

    matrix = confidence(shop_data.inter, np.ones(len(shop_data.inter), dtype=bool), default_weighting(Settings()))
    model = make_model(family, {"iterations": 5} if family != "itemknn" else {}, seed=0)
    model.fit(matrix)
    user = int(shop_data.split.users[0])
    ids, scores = model.recommend(np.array([user]), matrix, 1)
    parts = model.explain(user, matrix, int(ids[0, 0]), n=1000)
    history = set(matrix[user].indices.tolist())
    assert parts and {item for item, _ in parts} <= history
    assert [c for _, c in parts] == sorted((c for _, c in parts), reverse=True)
    if family == "itemknn":  # the score is exactly the sum of the contributions
        assert sum(c for _, c in parts) == pytest.approx(float(scores[0, 0]), rel=1e-4)
