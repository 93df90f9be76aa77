"""New items from day one, through the API (real Valkey): what publishing writes of the content model, an item
PATCHed with its attributes on its own and its neighbours' product pages at once in another worker, and the
``new`` placement."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from recommender.config import Settings
from recommender.data.privacy import pseudonymize
from recommender.online.content import ContentIndex
from recommender.online.keys import Keys, decode
from recommender.registry.newitems import content_index, published_index, write_content
from recommender.registry.tracking import load_bundle
from serving.app import create_app
from tests.conftest import SECRET

KEYS = Keys("recsys")
READ, WRITE = {"X-API-Key": "shop"}, {"X-API-Key": "backend"}


@pytest.fixture
def two(keyed: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API workers (two services, one Redis): what one is told, the other must show."""
    with TestClient(create_app(keyed)) as a, TestClient(create_app(keyed)) as b:
        yield a, b


def served(c: TestClient, name: str, **params: object) -> list[str]:
    response = c.get(f"/v1/placements/{name}", params=params, headers=READ)
    assert response.status_code == 200, response.text
    return [i["item_id"] for i in response.json()["items"]]


def published(settings: Settings) -> tuple[redis.Redis, str, ContentIndex]:
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    version = str(r.get(KEYS.active))  # the synthetic catalog has categories, prices, titles and brands
    return r, version, published_index(r, KEYS, version)


def test_every_version_carries_its_content_index_and_each_users_taste(keyed: Settings) -> None:
    r, version, index = published(keyed)
    catalog = set(r.hkeys(KEYS.items(version)))
    assert catalog <= set(index.ids) and index.vectors.shape == (len(index.ids), index.item_tokens.shape[1])
    assert index.new.any() and not index.new.all()
    user = pseudonymize("u1", SECRET)
    taste = np.frombuffer(base64.b64decode(r.get(KEYS.taste(version, user))), dtype=np.float16)
    assert taste.shape == (index.item_tokens.shape[1],) and np.abs(taste).sum() > 0


def test_a_patched_new_item_is_on_its_page_and_its_neighbours_pages_of_another_worker(
    two: tuple[TestClient, TestClient], keyed: Settings
) -> None:
    a, b = two
    r, version, index = published(keyed)
    model = index.ids[int(np.flatnonzero(index.modelled & ~index.new)[0])]
    details = orjson.loads(r.hget(KEYS.items(version), model))
    attributes = {k: v for k, v in details.items() if k not in {"title", "category", "price", "in_stock", "hidden"}}
    change = {"title": f"{details['title']} refill", "category": details["category"], "price": details["price"]}
    assert b.get("/v1/placements/product", params={"item_id": "fresh-1"}, headers=READ).json()["items"] != []  # (fill)
    assert served(b, "product", item_id="fresh-1", n=20) == served(b, "product", item_id="unknown-1", n=20)
    patched = a.patch("/v1/items/fresh-1", json={**change, "attributes": attributes}, headers=WRITE)
    assert patched.status_code == 200, patched.text
    own = served(b, "product", item_id="fresh-1", n=8)
    expected, _ = index.follows(index.encode({**change, **attributes})[2], 8, "fresh-1")
    assert own == expected and "fresh-1" not in own  # the content model's list, not the popular fill
    pages, _ = index.pages(*index.encode({**change, **attributes})[:2])
    shown = {page: served(b, "product", item_id=page, n=8) for page in pages[:3]}
    assert all("fresh-1" in items for items in shown.values()), shown
    assert all(items.index("fresh-1") <= keyed.new_item_slot + 1 for items in shown.values())
    similar = b.get(f"/v1/items/{pages[0]}/similar", params={"n": 8}, headers=READ).json()["items"]
    assert "fresh-1" in [i["item_id"] for i in similar]  # the similar-items route shows what the page shows
    assert "fresh-1" in served(b, "new", n=50) and "fresh-1" in served(b, "new", user_id="u1", n=50)
    assert a.patch("/v1/items/fresh-1", json={"hidden": True}, headers=WRITE).status_code == 200
    assert "fresh-1" not in served(b, "new", n=50) and "fresh-1" not in served(b, "product", item_id=pages[0])


def test_the_new_placement_ranks_only_new_items_for_the_user(
    two: tuple[TestClient, TestClient], keyed: Settings
) -> None:
    a, _ = two
    _, _, index = published(keyed)
    new = {index.ids[p] for p in np.flatnonzero(index.new)}
    mine, anyone = served(a, "new", user_id="u1", n=8), served(a, "new", n=8)
    assert mine and set(mine) <= new and set(anyone) <= new
    others = {tuple(served(a, "new", user_id=f"u{u}", n=8)) for u in range(2, 12)}
    assert len(others | {tuple(mine)}) > 1  # ranked per user, not one list for all
    assert set(served(a, "new", user_id="u1", n=8, exclude=",".join(mine[:2]))).isdisjoint(mine[:2])


def test_attributes_of_a_live_change_are_bounded_and_never_shadow_a_catalog_field(
    two: tuple[TestClient, TestClient],
) -> None:
    a, _ = two
    for body in (
        {"attributes": {"price": 3}},
        {"attributes": {"Brand": "x"}},
        {"attributes": {"brand": "x" * 300}},
        {"attributes": {f"a{k}": 1 for k in range(40)}},
        {"attributes": {"tags": list(range(20))}},
        {"attributes": {"tags": [1, 2**70]}},  # (the fuzzer's find: an integer past 64 bits was a 500)
    ):
        assert a.patch("/v1/items/fresh-2", json=body, headers=WRITE).status_code == 422, body
    huge = a.patch("/v1/items/fresh-2", json={"attributes": {"size": 2**64}}, headers=WRITE)  # taken as a float
    assert huge.status_code == 200 and a.get("/v1/placements/product?item_id=fresh-2", headers=READ).status_code == 200


def test_an_item_without_a_known_token_gets_no_place_and_the_browser_key_cannot_add_one(
    two: tuple[TestClient, TestClient], keyed: Settings
) -> None:
    a, b = two
    fill = served(b, "product", item_id="never-seen", n=8)
    body = {"title": "zzqx", "attributes": {"material": "unobtainium"}}  # no token the model was trained on
    assert a.patch("/v1/items/odd-1", json=body, headers=WRITE).status_code == 200
    assert served(b, "product", item_id="odd-1", n=8) == fill  # the popular fill, no content list
    assert "odd-1" not in served(b, "new", n=200)
    assert a.patch("/v1/items/fresh-3", json={"category": "c01"}, headers=READ).status_code == 403  # browser key
    assert "fresh-3" not in served(b, "new", n=200)


def test_a_publish_gives_lists_and_places_to_the_most_recently_changed_new_items_only(keyed: Settings) -> None:
    r, version, _ = published(keyed)
    bundle, _ = load_bundle(keyed, alias=None, model_version=str(r.hget(KEYS.meta(version), "model_version")))
    details = {str(k): str(v) for k, v in r.hgetall(KEYS.items(version)).items()}
    model = str(bundle.vocab.items[0])
    others = [f"added-{k}" for k in range(4)]  # catalog items no event names yet, with a known item's content
    details |= {item: details[model] for item in others}
    updated = {item: float(k) for k, item in enumerate(others)}  # the last ones changed most recently
    index = content_index(bundle, details, updated, max_users=0, max_new=2)
    assert index is not None
    assert [index.ids[p] for p in np.flatnonzero(index.new)] == others[-2:]
    assert set(index.ids) == {str(i) for i in bundle.vocab.items} | set(others[-2:])  # the older ones wait
    write_content(r, KEYS, "cap-test", index, keyed.similar_n, batch=100)
    assert all(r.exists(KEYS.similar("cap-test", item)) for item in others[-2:])  # a list without any event
    assert not any(r.exists(KEYS.similar("cap-test", item)) for item in others[:2])
    attached = [decode(r.get(key))[0] for key in r.scan_iter(match=KEYS.attached("cap-test", "*"))]
    assert attached and {i for lst in attached for i in lst} == set(others[-2:])
    for key in list(r.scan_iter(match=KEYS.ns("cap-test") + "*")):
        r.delete(key)
