"""Shared fixtures: an isolated RECSYS_HOME per test and the optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recommender.config import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose state lives in a fresh temp folder."""
    return Settings(home=tmp_path / "home", hmac_secret="test-secret")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real datasets (RECSYS_REAL_DATA, else ../shared/data); skips when absent."""
    path = Path(os.environ.get("RECSYS_REAL_DATA", REPO.parent / "shared" / "data"))
    if not (path / "amazon-beauty-5core" / "Beauty.txt").is_file():
        pytest.skip(f"real data not found at {path} (set RECSYS_REAL_DATA)")
    return path


def write(path: Path, text: str) -> Path:
    """Write a small fixture file and return its path."""
    path.write_text(text, encoding="utf-8")
    return path
