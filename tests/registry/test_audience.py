"""Audiences from the production model (real MLflow registry, real Iceberg): for an item, a category or an
attribute value, the users the model scores highest, without those who already have it or are forgotten;
exported to the table (replaced, never doubled) or to a file; forgetting removes them from the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recommender.config import Settings
from recommender.data.store import Store
from recommender.ops.export import export_audience
from recommender.registry.audience import AudienceError, Target, audience
from recommender.registry.tracking import load_bundle


def test_an_items_audience_is_the_models_best_users_without_those_who_have_it(served_settings: Settings) -> None:
    bundle, version = load_bundle(served_settings)
    col = int(np.argmax(np.diff(bundle.user_items.tocsc().indptr)))  # the most popular item
    item = str(bundle.vocab.items[col])
    found = audience(served_settings, Target(item=item), top=30)
    assert found.model_version == version and found.items == 1 and len(found.users) == 30
    users = np.arange(bundle.user_items.shape[0])
    scores = bundle.model.affinity(users, bundle.user_items, np.array([col]))
    assert scores is not None
    known = set(bundle.vocab.users[bundle.user_items[:, col].nonzero()[0]])
    ranked = [
        str(bundle.vocab.users[u]) for u in np.argsort(-scores, kind="stable") if bundle.vocab.users[u] not in known
    ]
    assert found.users == ranked[:30] and not set(found.users) & known
    assert found.scores == sorted(found.scores, reverse=True)
    assert set(audience(served_settings, Target(item=item), top=30, include_known=True).users) & known
    gone = found.users[0]
    Store(served_settings).add_tombstone(gone)
    assert gone not in audience(served_settings, Target(item=item), top=30).users


def test_a_category_or_attribute_audience_covers_its_items(served_settings: Settings) -> None:
    items = Store(served_settings).read_items()
    category = items.column("category")[0].as_py()
    of_category = items.filter(pc.equal(items.column("category"), category)).num_rows
    found = audience(served_settings, Target(category=category), top=10)
    assert 0 < found.items <= of_category and found.target == f"category:{category}" and len(found.users) == 10
    attributes = json.loads(next(a for a in items.column("attributes").to_pylist() if a))
    key, value = next(iter(attributes.items()))
    by_attribute = audience(served_settings, Target(attribute=(key, str(value))), top=5)
    assert by_attribute.items >= 1 and by_attribute.target == f"attribute:{key}={value}"


def test_bad_targets_are_clear_errors(served_settings: Settings) -> None:
    with pytest.raises(AudienceError, match="exactly one"):
        Target(item="i1", category="c01")
    with pytest.raises(AudienceError, match="no item of item:nope"):
        audience(served_settings, Target(item="nope"))


def test_an_audience_exports_to_the_table_replaced_and_forgotten_with_the_user(
    served_settings: Settings, tmp_path: Path
) -> None:
    bundle, _ = load_bundle(served_settings)
    found = audience(served_settings, Target(item=str(bundle.vocab.items[0])), top=20)
    store = Store(served_settings)
    assert export_audience(served_settings, found)["rows"] == 20
    assert export_audience(served_settings, found)["rows"] == 20
    rows = store.audiences().scan().to_arrow()
    assert rows.num_rows == 20 and rows.column("rank").to_pylist() == list(range(1, 21))  # replaced, not doubled
    assert store.delete_user(found.users[3])["audiences_rows"] == 1
    assert found.users[3] not in store.audiences().scan().to_arrow().column("user_id").to_pylist()
    written = export_audience(served_settings, found, to=str(tmp_path))
    part = next(Path(written["target"]).glob("part-*.parquet"))
    assert pq.read_table(part).column("user_id").to_pylist() == found.users
