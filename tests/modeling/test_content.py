"""The content model for new items: its features from catalog rows, and the new-items protocol on a shop with a
planted taste (each user keeps to one brand, and within it moves from shampoo to conditioner)."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.data.content import item_tokens
from recommender.modeling.content import (
    ContentModel,
    ContentTower,
    TowerConfig,
    cold_figures,
    cold_split,
    content_matrix,
    fit_content,
    hit_rate,
    tfidf_profile,
    token_weights,
)


def test_every_catalog_field_becomes_tokens() -> None:
    row = {"category": "hair", "price": 12.5, "title": "Silk Shampoo", "brand": "acme", "tags": [3, 7], "hidden": 0}
    assert item_tokens(row) == [
        "category=hair", "price<20", "brand:acme", "tags=3", "tags=7", "title:silk", "title:shampoo",
    ]  # fmt: skip
    assert item_tokens({"item_id": "x"}) == [] and item_tokens({"price": float("nan")}) == []
    matrix = content_matrix([row, {"category": "hair"}, {}])
    assert matrix.shape[0] == 3 and np.allclose(np.asarray(matrix.multiply(matrix).sum(1)).ravel()[:2], 1.0)


def test_ties_are_broken_at_random_not_by_catalog_order() -> None:
    flat = np.zeros(100)
    hits = [hit_rate(flat, 0, rng=np.random.default_rng(s))[0] for s in range(200)]
    assert 0.03 < np.mean(hits) < 0.2  # about 10 in 100, never 1 (first in order) nor 0
    assert hit_rate(np.arange(100.0)[::-1], 0) == (1, 1.0)


def planted_shop() -> tuple[list[dict[str, object]], list[list[int]]]:
    """20 brands x (5 shampoos, 5 conditioners); each user buys 3 shampoos then 3 conditioners of one brand."""
    rows = [{"category": kind, "brand": f"b{b}"} for b in range(20) for kind in ["shampoo"] * 5 + ["conditioner"] * 5]
    rng = np.random.default_rng(1)
    sequences = []
    for _ in range(600):
        b = int(rng.integers(20))
        shampoos, conditioners = rng.permutation(5)[:3] + 10 * b, rng.permutation(5)[:3] + 10 * b + 5
        sequences.append([int(i) for i in [*shampoos, *conditioners]])
    return rows, sequences


def test_token_weights_are_scikit_learns_tf_idf_rows_heaviest_first() -> None:
    rows = [{"category": "hair", "brand": "acme acme", "title": "Silk"}, {"category": "hair"}, {"brand": "zeta"}]
    weights, matrix = token_weights(rows, max_tokens=2), content_matrix(rows).toarray()
    for r, row in enumerate(rows):
        index, weight = weights.of(item_tokens(row))
        expected = np.argsort(-matrix[r], kind="stable")[: min(2, int((matrix[r] > 0).sum()))]
        assert sorted(index.tolist()) == sorted(expected.tolist())
        assert np.allclose(weight, matrix[r][index], atol=1e-6) and list(weight) == sorted(weight, reverse=True)
    assert weights.of(["brand:unknown"])[0].size == 0  # a token the catalog never had weighs nothing


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_content_models_rank_new_items_of_the_users_brand_and_next_category_first() -> None:
    rows, sequences = planted_shop()
    content = content_matrix(rows)
    split = cold_split(sequences, len(rows), fraction=0.2, seed=0)
    assert not set(split.new) & {i for t in split.train for i in t}  # nothing of a new item is trained on
    weights = token_weights(rows, 16)
    tower = ContentTower.fit(
        weights.padded([item_tokens(r) for r in rows]),
        len(weights.vocabulary),
        [t for t in split.train if len(t) > 1],
        split.warm,
        TowerConfig(epochs=30, batch=64),
    )
    position = {int(item): k for k, item in enumerate(split.new)}
    found: dict[str, list[int]] = {"random": [], "profile": [], "tower": []}
    rng = np.random.default_rng(0)
    for history, target in zip(split.histories, split.targets, strict=True):
        profile, towered = tfidf_profile(content, history, split.new), tower.scores(history, split.new)
        for name, scores in (("random", rng.random(len(split.new))), ("profile", profile), ("tower", towered)):
            found[name].append(hit_rate(scores, position[int(target)], k=3, rng=rng)[0])
    rate = {name: float(np.mean(hits)) for name, hits in found.items()}
    assert len(split.targets) > 50
    assert rate["profile"] > 3 * rate["random"]  # the brand
    assert rate["tower"] > rate["profile"]  # the brand, and that a conditioner follows the shampoos


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_model_published_with_a_version_carries_its_figures_and_every_users_taste(tmp_path) -> None:
    rows, sequences = planted_shop()
    config = TowerConfig(epochs=30, batch=64)
    model = fit_content(rows, sequences, k=1, config=config)
    assert model is not None
    figures = cold_figures(rows, sequences, k=1, config=config)
    assert model.metrics == figures and figures["cold_users"] > 0
    assert figures["cold_tower_hr_at_1"] > figures["cold_profile_hr_at_1"] > figures["cold_random_hr_at_1"]
    user = 5
    expected = model.tower.user_vector(sequences[user])
    assert model.taste.shape == (len(sequences), config.dim)
    assert np.allclose(model.taste[user].astype(np.float32), expected, atol=2e-3)
    model.save(tmp_path)
    again = ContentModel.load(tmp_path)
    assert again.metrics == model.metrics and dict(again.weights.vocabulary) == dict(model.weights.vocabulary)
    assert np.array_equal(again.taste, model.taste) and np.array_equal(again.tower.ids, model.tower.ids)
    assert fit_content([{"item_id": "a"}, {"in_stock": True}], [[0, 1]]) is None  # no content: no model
