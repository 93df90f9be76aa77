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
import redis

from recommender.config import Settings
from recommender.data.store import Store
from recommender.modeling.bundle import Bundle
from recommender.modeling.families import make_model
from recommender.modeling.matrix import Vocabulary
from recommender.online.keys import Keys
from recommender.ops.export import export_audience
from recommender.registry.audience import AudienceError, Target, _typed, audience, rank_audience
from recommender.registry.tracking import load_bundle
from tests.modeling.test_models import PARAMS, checkerboard


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
    gone, queued = found.users[:2]
    Store(served_settings).add_tombstone(gone)
    r = redis.Redis.from_url(str(served_settings.redis_url), decode_responses=True)
    r.sadd(Keys("recsys").forget_pending, queued)  # DELETE /v1/users/{id} before the forget_user run
    assert {gone, queued}.isdisjoint(audience(served_settings, Target(item=item), top=30).users)


def test_ties_at_the_cut_go_by_row_and_attribute_values_are_typed() -> None:
    m = checkerboard()
    model = make_model("itemknn", PARAMS["itemknn"], seed=1)
    model.fit(m)
    vocab = Vocabulary(users=np.array([f"u{u}" for u in range(m.shape[0])], dtype=object), items=np.arange(20))
    bundle = Bundle(model=model, vocab=vocab, weighting=None, user_items=m)  # type: ignore[arg-type]
    rows, scores = rank_audience(bundle, np.array([0]), 15, include_known=True, forgotten={"u0"})
    assert sorted(rows[:9].tolist()) == [2, 4, 6, 8, 10, 12, 14, 16, 18]  # the even users, "u0" forgotten
    assert rows[9:].tolist() == [1, 3, 5, 7, 9, 11] and set(scores[9:]) == {0.0}  # the odd users tie at 0
    assert 0 not in rows.tolist()
    assert _typed("true") is True and _typed("2") == 2 and _typed("organic") == "organic"


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
