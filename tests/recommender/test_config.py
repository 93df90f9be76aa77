"""One settings object, read from RECSYS_* variables, with no side effects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recommender.config import Settings


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("RECSYS_EVENT_WEIGHTS", json.dumps({"view": 1, "purchase": 5}))
    s = Settings()
    assert s.home_abs == (tmp_path / "h").resolve()
    assert s.event_types == ("view", "purchase")
    assert s.iceberg_catalog_uri == f"sqlite:///{tmp_path / 'h' / 'catalog.db'}"
    assert s.iceberg_warehouse.startswith("file://")


def test_building_settings_creates_nothing(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "not-yet")
    _ = (s.iceberg_catalog_uri, s.iceberg_warehouse)
    assert not (tmp_path / "not-yet").exists()


def test_empty_event_weights_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one event type"):
        Settings(home=tmp_path, event_weights={})
