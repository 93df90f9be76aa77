"""The command-line contract: one JSON line with --json, one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recommender.cli import app
from recommender.config import get_settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_REDIS_URL", redis_server)
    monkeypatch.setenv("RECSYS_HMAC_SECRET", "cli-secret")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])  # type: ignore[no-any-return]


def test_full_path_through_the_cli(env: Path) -> None:
    shop = run("generate", "--out", str(env / "shop"), "--users", "300", "--items", "100", "--events", "8000")
    assert shop["events"] == 8000
    ingested = run("ingest", shop["events_path"], "--catalog", shop["catalog_path"])
    assert ingested["read"] == ingested["stored"] == 8000 and ingested["reconciles"] and ingested["snapshot_id"]
    snaps = runner.invoke(app, ["snapshots", "--json"])
    assert json.loads(snaps.stdout)[0]["snapshot_id"] == ingested["snapshot_id"]
    trained = run("train", "--model", "itemknn", "--param", "K=40", "--half-life-days", "14")
    assert trained["model_version"] == "1" and trained["metrics"]["test_ndcg_at_10"] > 0
    assert run("promote", "--to", "staging")["decision"] == "moved"
    promoted = run("promote", "--to", "production")
    assert promoted["promoted"] and promoted["decision"] == "passed"
    published = run("publish")
    assert published["model_version"] == "1" and published["users"] > 250
    recs = run("recommend", "u1", "-n", "3")
    assert recs["source"] == "personalized" and len(recs["items"]) == 3 and recs["version"] == published["version"]
    assert run("similar", "i1", "-n", "2")["source"] == "similar"
    why = run("explain", "u1", recs["items"][0], "-n", "3")
    assert why["known_user"] and why["family"] == "itemknn" and 1 <= len(why["contributions"]) <= 3
    assert why["contributions"][0][1] > 0


def test_errors_are_one_line_and_non_zero(env: Path) -> None:
    missing = runner.invoke(app, ["ingest", str(env / "absent.csv")])
    assert missing.exit_code == 1 and "no such file" in missing.output and "Nothing was stored" in missing.output
    train = runner.invoke(app, ["train"])
    assert train.exit_code == 1 and "recsys ingest" in train.output
    bad_param = runner.invoke(app, ["train", "--param", "factors"])
    assert bad_param.exit_code == 1 and "key=value" in bad_param.output
    rollback = runner.invoke(app, ["rollback"])
    assert rollback.exit_code == 1 and "no previous production" in rollback.output


def test_production_mode_refuses_the_default_secret(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_ENV", "production")
    monkeypatch.delenv("RECSYS_HMAC_SECRET")
    get_settings.cache_clear()
    result = runner.invoke(app, ["snapshots"])
    assert result.exit_code == 1 and "RECSYS_HMAC_SECRET" in result.output
