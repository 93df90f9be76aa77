"""Audiences: the users most likely to engage with an item, a category or an attribute value, for a promotion
or a restock mail.

The production model scores every user it knows for the target's items as it scores items when it ranks them
(:meth:`Model.affinity`): a factor model (ALS, BPR) the user vectors against the items' mean vector, item-KNN
the items' score from each user's history (weight x similarity), the sequential family the user's newest
hidden state against the items' mean embedding, a blend its members' standardized scores weighed as it weighs
them. The popular family scores every user alike, so it has no audience. Users who already interacted with
the target's items in the model's training data are left out unless ``include_known``; users tombstoned or
queued for forgetting always are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.compute as pc

from recommender.config import Settings
from recommender.data.store import Store
from recommender.modeling.bundle import Bundle
from recommender.online.keys import Keys
from recommender.online.redis_conn import connect
from recommender.registry.publish import forgotten
from recommender.registry.tracking import PRODUCTION, load_bundle


class AudienceError(LookupError):
    """No target, a target no item of the model matches, or a model that ranks every user alike."""


@dataclass(frozen=True)
class Target:
    """What an audience is for: one of an item, a category or an attribute ``key=value``."""

    item: str | None = None
    category: str | None = None
    attribute: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.item, self.category, self.attribute)) != 1:
            raise AudienceError("name exactly one of an item, a category or an attribute (key=value)")

    @property
    def label(self) -> str:
        """``item:I``, ``category:C`` or ``attribute:K=V``."""
        if self.item is not None:
            return f"item:{self.item}"
        if self.category is not None:
            return f"category:{self.category}"
        key, value = self.attribute  # type: ignore[misc]
        return f"attribute:{key}={value}"


@dataclass(frozen=True)
class Audience:
    """The top users (pseudonyms) with their scores, best first."""

    target: str
    model_version: str
    family: str
    items: int
    """The target's items the model knows."""
    users: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def target_items(store: Store, target: Target) -> list[str]:
    """The catalog's items of a category or an attribute value (an item: itself)."""
    if target.item is not None:
        return [target.item]
    rows = store.read_items()
    if target.category is not None:
        return rows.filter(pc.equal(rows.column("category"), target.category)).column("item_id").to_pylist()
    key, text = target.attribute  # type: ignore[misc]
    wanted = _typed(text)
    out = []
    for item, attributes in zip(rows.column("item_id").to_pylist(), rows.column("attributes").to_pylist(), strict=True):
        held = (json.loads(attributes) if attributes else {}).get(key)
        values = held if isinstance(held, list) else [held]
        if any(v is not None and (v == wanted or str(v) == text) for v in values):
            out.append(item)
    return out


def _typed(text: str) -> object:
    """A command line's value as the catalog's JSON holds it: ``true`` a boolean, ``2`` a number, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def rank_audience(
    bundle: Bundle, cols: np.ndarray, top: int, include_known: bool, forgotten: set[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` user rows by the model's affinity for ``cols``, best first, and their scores."""
    users = np.arange(bundle.user_items.shape[0])
    scores = bundle.model.affinity(users, bundle.user_items, cols, sequences=bundle.sequences)
    if scores is None:
        raise AudienceError(f"the {bundle.model.family} model scores every user alike: it has no audience")
    scores = np.asarray(scores, dtype=np.float64).copy()
    if not include_known:
        scores[np.asarray(bundle.user_items[:, cols].sum(axis=1)).ravel() > 0] = -np.inf
    if forgotten:
        rows = bundle.vocab.user_rows(sorted(forgotten))
        scores[rows[rows >= 0]] = -np.inf
    count = min(top, int(np.isfinite(scores).sum()))
    order = np.argsort(-scores, kind="stable")[:count]  # ties by row, at the cut too: the same audience every time
    return order, scores[order]


def audience(
    settings: Settings, target: Target, top: int = 100, include_known: bool = False, alias: str = PRODUCTION
) -> Audience:
    """The ``top`` users the model holding ``alias`` scores highest for ``target``."""
    store = Store(settings)
    bundle, version = load_bundle(settings, alias)
    wanted = target_items(store, target)
    cols = bundle.vocab.item_cols(wanted) if wanted else np.zeros(0, dtype=np.int64)
    cols = cols[cols >= 0]
    if not len(cols):
        raise AudienceError(f"no item of {target.label} is in model version {version} (new items have no audience)")
    with connect(settings) as r:  # tombstoned, or queued by DELETE /v1/users/{id} and not yet done
        gone = forgotten(r, Keys(settings.redis_prefix), settings)
    rows, scores = rank_audience(bundle, cols, top, include_known, set(gone))
    users = [str(u) for u in bundle.vocab.users[rows]]
    return Audience(target.label, version, bundle.model.family, len(cols), users, np.round(scores, 6).tolist())
