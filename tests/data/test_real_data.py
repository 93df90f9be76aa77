"""Ingest of the shared real samples (skips when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.store import Store

pytestmark = pytest.mark.real_data


def test_amazon_beauty_5core(settings: Settings, real_data: Path) -> None:
    summary = ingest_file(real_data / "amazon-beauty-5core" / "Beauty.txt", settings, "amazon-5core")
    assert summary.reconciles
    assert (summary.read, summary.stored, summary.quarantined) == (198_502, 198_502, 0)
    events = Store(settings).read_events().to_pandas()
    assert events["user_id"].nunique() == 22_363 and events["item_id"].nunique() == 12_101


def test_session_rec_sample(settings: Settings, real_data: Path) -> None:
    path = real_data / "yoochoose-clicks-sample" / "yoochoose-clicks-100k_train_full.txt"
    summary = ingest_file(path, settings)  # format detected from the header
    assert summary.reconciles and summary.read == 70_278 and summary.quarantined == 0
    events = Store(settings).read_events().to_pandas()
    assert events["session_id"].nunique() == 17_794 and events["item_id"].nunique() == 2_933
