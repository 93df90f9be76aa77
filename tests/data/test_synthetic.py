"""The synthetic shop: deterministic, realistic in shape, canonical in format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recommender.data.synthetic import ShopSpec, generate, iter_shop, write_generated, write_shop

SPEC = ShopSpec(users=400, items=200, events=20_000, seed=3, days=28)


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return generate(SPEC).events.to_pandas()


def test_same_seed_same_output() -> None:
    assert generate(SPEC).events.equals(generate(SPEC).events)
    assert not generate(SPEC).events.equals(generate(ShopSpec(**{**SPEC.__dict__, "seed": 4})).events)


def test_exact_event_count_and_sorted_time(shop: pd.DataFrame) -> None:
    assert len(shop) == SPEC.events
    assert shop["timestamp"].is_monotonic_increasing
    assert shop["event_id"].is_unique


def test_funnel_rates_are_plausible(shop: pd.DataFrame) -> None:
    share = shop["event_type"].value_counts(normalize=True)
    assert share["view"] > 0.85
    assert 0.03 < share["add_to_cart"] < 0.12
    assert share["purchase"] < share["add_to_cart"]


def test_popularity_is_heavy_tailed(shop: pd.DataFrame) -> None:
    counts = shop["item_id"].value_counts().to_numpy()
    top_decile = counts[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_decile > 0.3  # a uniform shop would give ~0.1


def test_users_stick_to_their_categories(shop: pd.DataFrame) -> None:
    catalog = generate(SPEC).catalog.to_pandas().set_index("item_id")["category"]
    cats = shop.assign(category=shop["item_id"].map(catalog))
    top_share = cats.groupby("user_id")["category"].agg(lambda c: c.value_counts(normalize=True).iloc[0])
    n_cat = catalog.nunique()
    assert top_share.median() > 2.0 / n_cat


def test_weekly_seasonality(shop: pd.DataFrame) -> None:
    by_day = shop["timestamp"].dt.day_of_week.value_counts()
    assert by_day[5] > by_day[1]  # Saturday busier than Tuesday


def test_new_items_appear_over_time(shop: pd.DataFrame) -> None:
    first_seen = shop.groupby("item_id")["timestamp"].min()
    assert (first_seen > shop["timestamp"].min() + pd.Timedelta(days=7)).sum() > 5


def test_drift_changes_popularity_after_the_given_day() -> None:
    base = generate(ShopSpec(**{**SPEC.__dict__, "drift_from": None})).events.to_pandas()
    drift = generate(ShopSpec(**{**SPEC.__dict__, "drift_from": 14})).events.to_pandas()
    cut = base["timestamp"].min().normalize() + pd.Timedelta(days=14)

    def top(frame: pd.DataFrame, after: bool) -> set[str]:
        part = frame[(frame["timestamp"] >= cut) == after]
        return set(part["item_id"].value_counts().index[:20])

    assert len(top(base, False) & top(base, True)) > len(top(drift, False) & top(drift, True))


def test_written_files_are_canonical(tmp_path: Path) -> None:
    events_path, catalog_path = write_shop(generate(ShopSpec(users=20, items=30, events=300, seed=1)), tmp_path)
    events = pd.read_csv(events_path)
    assert {"user_id", "item_id", "event_type", "timestamp", "event_id"} <= set(events.columns)
    assert events["timestamp"].str.endswith("Z").all()
    catalog = pd.read_csv(catalog_path)
    assert list(catalog.columns) == ["item_id", "title", "category", "price", "in_stock", "brand"]
    assert set(events["item_id"]) <= set(catalog["item_id"])
    assert np.isfinite(catalog["price"]).all()


def test_rejects_empty_spec() -> None:
    with pytest.raises(ValueError):
        generate(ShopSpec(users=0))


def test_a_shop_generated_in_chunks_has_every_event_once_and_is_reproducible(tmp_path: Path) -> None:
    spec = ShopSpec(users=3000, items=400, events=60_000, seed=3, days=40, drift_from=30)
    catalog, chunks = iter_shop(spec, chunk_views=5_000)
    parts = list(chunks)
    events = pa.concat_tables(parts)
    assert len(parts) > 5 and events.num_rows == 60_000
    assert len(set(events.column("event_id").to_pylist())) == 60_000
    assert all(p.column("timestamp").to_pylist() == sorted(p.column("timestamp").to_pylist()) for p in parts)
    again = pa.concat_tables(list(iter_shop(spec, chunk_views=5_000)[1]))
    assert again.equals(events) and catalog.num_rows == 400
    events_path, _, written = write_generated(spec, tmp_path / "shop")
    assert written == 60_000 and sum(1 for _ in events_path.open()) == 60_001  # header + rows
