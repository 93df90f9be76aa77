"""Publishing the content model: the version's content index, the new items' lists and places, users' tastes.

The API reads what this writes (:mod:`recommender.online.content`): the index in base64 parts, each new
item's similar list when the collaborative model has none, the ``attached`` lists (which new items join
which item's similar list) and each user's taste vector (for the ``new`` placement).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import numpy as np
import redis

from recommender.data.content import item_tokens
from recommender.modeling.bundle import Bundle
from recommender.online.content import ATTACHED_KEPT, ContentIndex, List, merged
from recommender.online.keys import Keys, encode

PART_BYTES = 4 << 20
"""The index is written in strings of at most this many bytes (the API reads them one GET at a time)."""
PAGE_BATCH = 256


def content_index(
    bundle: Bundle, details: Mapping[str, str], updated: Mapping[str, float], max_users: int, max_new: int
) -> ContentIndex | None:
    """The index of ``bundle``'s content model (None without one) over its items and the catalog's others that
    have content (``details``: item -> JSON). Items with at most ``max_users`` users are new, the ``max_new``
    most recently ``updated`` of them; a catalog item beyond those, without events, is left out."""
    model = bundle.content
    if model is None:
        return None
    tower, vocabulary = model.tower, [str(i) for i in bundle.vocab.items]
    rows = {i: json.loads(raw) for i, raw in details.items()}
    known = set(vocabulary)
    others = [i for i in rows if i not in known and item_tokens(rows[i])]
    few = bundle.popularity() <= max_users
    candidates = [vocabulary[c] for c in np.flatnonzero(few)] + others
    newest = set(sorted(candidates, key=lambda i: (-updated.get(i, 0.0), i))[:max_new])
    names = vocabulary + [i for i in others if i in newest]
    n, dim, modelled = len(names), tower.item_tokens.shape[1], len(vocabulary)
    index = ContentIndex(
        weights=model.weights,
        item_tokens=tower.item_tokens,
        user_tokens=tower.user_tokens,
        token_bias=tower.bias,
        ids=names,
        vectors=np.zeros((n, dim), dtype=np.float32),
        bias=np.zeros(n, dtype=np.float32),
        after=np.zeros((n, dim), dtype=np.float32),
        new=np.array([i in newest for i in names], dtype=bool),
        modelled=np.arange(n) < modelled,
    )
    for p, item in enumerate(names):
        index.vectors[p], index.bias[p], index.after[p] = index.encode(rows.get(item, {}))
    index.after[:modelled] += tower.ids[:modelled]  # a modelled item's own trained part
    return index


def write_content(
    r: redis.Redis, keys: Keys, version: str, index: ContentIndex, similar_n: int, batch: int
) -> dict[str, int]:
    """Write the index and the new items' lists and places; returns counts (for the version's meta)."""
    blob = base64.b64encode(index.to_bytes())
    parts = [blob[lo : lo + PART_BYTES] for lo in range(0, len(blob), PART_BYTES)]
    for number, part in enumerate(parts):
        r.set(keys.content(version, number), part)
    new = np.flatnonzero(index.new)
    pages: dict[str, list[List]] = {}
    for lo in range(0, len(new), PAGE_BATCH):  # one matrix product per batch of new items
        chunk = new[lo : lo + PAGE_BATCH]
        alone = chunk[~index.modelled[chunk]]
        own = index.follows_many(index.after[alone], similar_n, [index.ids[p] for p in alone])
        if own:
            r.mset({keys.similar(version, index.ids[p]): encode(*lst) for p, lst in zip(alone, own, strict=True)})
        for p, found in zip(chunk, index.pages_many(index.vectors[chunk], index.bias[chunk]), strict=True):
            for page, score in zip(*found, strict=True):
                pages.setdefault(page, []).append(([index.ids[p]], [score]))
    attached = {}
    for page, lists in pages.items():
        ids, scores = merged(lists)
        attached[keys.attached(version, page)] = encode(ids[:ATTACHED_KEPT], scores[:ATTACHED_KEPT])
    entries = list(attached.items())
    for lo in range(0, len(entries), batch):
        r.mset(dict(entries[lo : lo + batch]))
    return {"content_parts": len(parts), "new_items": len(new), "content_items": len(index.ids)}


def write_tastes(r: redis.Redis, keys: Keys, version: str, bundle: Bundle, rows: np.ndarray) -> None:
    """The taste vectors of the users in ``rows`` (none without a content model)."""
    if bundle.content is None or not len(rows):
        return
    taste = bundle.content.taste
    r.mset(
        {
            keys.taste(version, str(user)): base64.b64encode(taste[row].astype(np.float16).tobytes())
            for row, user in zip(rows, bundle.vocab.users[rows], strict=True)
        }
    )


def published_index(r: redis.Redis, keys: Keys, version: str) -> ContentIndex:
    """The content index ``version`` was published with (LookupError: none)."""
    parts = int(r.hget(keys.meta(version), "content_parts") or 0)
    blob = "".join(str(r.get(keys.content(version, p)) or "") for p in range(parts))
    if not parts or not blob:
        raise LookupError(f"version {version} was published without a content model")
    return ContentIndex.from_bytes(base64.b64decode(blob))
