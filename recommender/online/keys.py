"""The Redis key schema, shared by the publisher and the API.

Everything of one published version lives under ``{prefix}:v:{version}:``; readers first
GET the active pointer (``{recsys}:active`` for the default prefix) and then read only that
version's keys, so flipping the pointer is the one atomic step of a publish. Values are JSON.

Placement in a Redis Cluster: the pointers a flip changes together (active, versions,
challenger, started) share the hash tag ``{prefix}``, so the flip's MULTI/EXEC stays on one
slot; a user's list and session share the tag of the user id, so the API reads both in one
MGET on one node; everything else spreads over the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "recsys"

    @property
    def _control(self) -> str:
        """Hash-tagged prefix of the pointers that change together (one cluster slot)."""
        return f"{{{self.prefix}}}"

    @property
    def active(self) -> str:
        """STRING: the active published version."""
        return f"{self._control}:active"

    @property
    def challenger(self) -> str:
        """STRING: a second published version served to a share of users (champion/challenger), if any."""
        return f"{self._control}:challenger"

    @property
    def experiment(self) -> str:
        """STRING: JSON ``{"id", "started_at", "challenger"}`` of the running experiment (set with the challenger)."""
        return f"{self._control}:experiment"

    @property
    def experiment_report(self) -> str:
        """STRING: JSON of the last experiment report (``recsys experiment report``), for the console."""
        return f"{self._control}:experiment_report"

    @property
    def exports(self) -> str:
        """HASH: placement -> JSON summary of its last bulk export (``recsys export``), for the console."""
        return f"{self._control}:exports"

    def served(self, experiment_id: str) -> str:
        """HASH: model_version -> lists served in experiment ``experiment_id`` (impressions)."""
        return f"{self.prefix}:experiment:{experiment_id}:served"

    def exposed(self, experiment_id: str, model_version: str) -> str:
        """SET: pseudonyms served ``model_version`` in experiment ``experiment_id`` (the report's users)."""
        return f"{self.prefix}:experiment:{experiment_id}:exposed:{model_version}"

    def new_served(self, experiment_id: str) -> str:
        """HASH: model_version -> new items shown (as ``new`` or ``explore``) in experiment ``experiment_id``."""
        return f"{self.prefix}:experiment:{experiment_id}:new_served"

    def new_shown(self, experiment_id: str, model_version: str) -> str:
        """SET: the new items ``model_version`` showed in experiment ``experiment_id`` (their clicks: the report)."""
        return f"{self.prefix}:experiment:{experiment_id}:new_shown:{model_version}"

    def explore(self, model_version: str) -> str:
        """HASH: ``shown:{item}`` and ``clicked:{item}`` of the items ``model_version``'s lists explored."""
        return f"{self.prefix}:explore:{model_version}"

    def explored(self, recommendation_id: str) -> str:
        """SET: the items one list showed in its exploration slots, each removed by its first click."""
        return f"{self.prefix}:explored:{{{recommendation_id}}}"

    def experiment_data(self, experiment_id: str) -> str:
        """Pattern of every key of experiment ``experiment_id``."""
        return f"{self.prefix}:experiment:{experiment_id}:*"

    @property
    def versions(self) -> str:
        """LIST: published versions, newest first (the active one and those kept for rollback)."""
        return f"{self._control}:versions"

    @property
    def started(self) -> str:
        """SET: every version a publish has started writing (to find and clean up partial ones)."""
        return f"{self._control}:versions:started"

    @property
    def events(self) -> str:
        """STREAM: events accepted by the API (pseudonymized, validated), drained by ingest."""
        return f"{self.prefix}:events"

    @property
    def forget_pending(self) -> str:
        """SET: pseudonyms whose deletion was requested through the API, for the forget_user DAG."""
        return f"{self.prefix}:forget:pending"

    @property
    def rules_rev(self) -> str:
        """STRING counter: bumped by every rules change (API workers poll it and then re-read the rules)."""
        return f"{self._control}:rules:rev"

    @property
    def catalog_live(self) -> str:
        """HASH: ``{field}:{item_id}`` -> JSON ``[value, updated_at]``: live catalog changes, newest per field."""
        return f"{self._control}:catalog:live"

    @property
    def catalog_live_cutoff(self) -> str:
        """STRING: unix time below which publishing compacted the live fields away (workers drop them too)."""
        return f"{self._control}:catalog:live:cutoff"

    @property
    def catalog_changes(self) -> str:
        """STREAM: every live catalog change (API workers read it from their position; the drain stores it)."""
        return f"{self._control}:catalog:changes"

    @property
    def catalog_changes_stored(self) -> str:
        """STRING: the last stream id the catalog drain stored in the items table."""
        return f"{self._control}:catalog:changes:stored"

    def cursors_of(self, owner: str) -> str:
        """ZSET: an owner's (a user's or an address's) cursor tokens by creation time (their number is capped)."""
        return f"{self.prefix}:cursors:{owner}"

    def rules(self, placement: str) -> str:
        """STRING: JSON rule set of ``placement`` (absent: the placements config's)."""
        return f"{self._control}:rules:{placement}"

    def rules_history(self, placement: str) -> str:
        """LIST: every rule set ``placement`` had, newest first, with when and by which key."""
        return f"{self._control}:rules:{placement}:history"

    def cursor(self, token: str) -> str:
        """SET with a TTL: items already shown on the pages of one cursor."""
        return f"{self.prefix}:cursor:{token}"

    def session(self, user_id: str) -> str:
        """STRING: JSON list of a user's most recent items, newest first (expires after a quiet spell)."""
        return f"{self.prefix}:session:{{{user_id}}}"

    def ns(self, version: str) -> str:
        """Prefix of all keys of ``version``."""
        return f"{self.prefix}:v:{version}:"

    def lease(self, version: str) -> str:
        """STRING with a TTL: ``version`` is being written; cleanups leave it alone while it exists."""
        return f"{self.ns(version)}lease"

    def meta(self, version: str) -> str:
        """HASH: model_version, run_id, published_at, counts."""
        return f"{self.ns(version)}meta"

    def user(self, version: str, user_id: str) -> str:
        """STRING: {"items": [...], "scores": [...]} for a pseudonymized user id."""
        return f"{self.ns(version)}user:{{{user_id}}}"

    def user_of(self, key: str) -> str:
        """The user id in a :meth:`user` or :meth:`session` key."""
        return key[key.rindex("{") + 1 : -1]

    def similar(self, version: str, item_id: str) -> str:
        """STRING: {"items": [...], "scores": [...]} similar to ``item_id``."""
        return f"{self.ns(version)}similar:{item_id}"

    def together(self, version: str, item_id: str) -> str:
        """STRING: {"items": [...], "scores": [...]} frequently bought together with ``item_id``."""
        return f"{self.ns(version)}together:{item_id}"

    def bought(self, version: str, user_id: str) -> str:
        """STRING: {"items": [...], "scores": [last purchase, unix seconds]} of a pseudonymized user."""
        return f"{self.ns(version)}bought:{{{user_id}}}"

    def sequence(self, version: str, user_id: str) -> str:
        """STRING: JSON list of a pseudonymized user's newest items, oldest first (sequential models only)."""
        return f"{self.ns(version)}sequence:{{{user_id}}}"

    def taste(self, version: str, user_id: str) -> str:
        """STRING: base64 of a pseudonymized user's taste vector (float16), the content model's user side."""
        return f"{self.ns(version)}taste:{{{user_id}}}"

    def personal(self, version: str, user_id: str) -> tuple[str, ...]:
        """Every key of ``version`` that holds a user's own data: recommended, bought, sequence, taste (what
        forgetting removes)."""
        return (
            self.user(version, user_id),
            self.bought(version, user_id),
            self.sequence(version, user_id),
            self.taste(version, user_id),
        )

    @property
    def audiences_wanted(self) -> str:
        """HASH: target label -> JSON ``{"top", "asked_at", "read_at"}``: the audiences GET /v1/audiences keeps."""
        return f"{self.prefix}:audiences:wanted"

    def audiences(self, version: str) -> str:
        """HASH: target label -> JSON status of its audience in ``version`` (size, model, time, or the error).

        It and the audiences share one hash tag, so a replace is one MULTI/EXEC in a Redis Cluster too."""
        return f"{self.ns(version)}{{audiences}}"

    def audience(self, version: str, label: str) -> str:
        """ZSET: pseudonym -> the model's affinity, the audience of target ``label`` in ``version``."""
        return f"{self.ns(version)}{{audiences}}:{label}"

    def attached(self, version: str, item_id: str) -> str:
        """STRING: {"items": [...], "scores": [...]}: new items that join the similar list of ``item_id``."""
        return f"{self.ns(version)}attached:{item_id}"

    def content(self, version: str, part: int) -> str:
        """STRING: part ``part`` of the content index (base64 of an ``.npz``; ``content_parts`` in the meta)."""
        return f"{self.ns(version)}content:{part}"

    def sequence_model(self, version: str) -> str:
        """STRING: the sequential model's weights (base64 of an ``.npz``), read by the API's numpy forward pass."""
        return f"{self.ns(version)}sequence_model"

    def repurchase(self, version: str) -> str:
        """HASH: category -> median seconds between two purchases of it by one user."""
        return f"{self.ns(version)}repurchase"

    def popular(self, version: str, category: str | None = None) -> str:
        """STRING: popular items overall, or within ``category``."""
        return f"{self.ns(version)}popular" + (f":cat:{category}" if category else "")

    def items(self, version: str) -> str:
        """HASH: item_id -> {"title", "category", "price", "in_stock", "hidden", ...attributes} (the catalog)."""
        return f"{self.ns(version)}items"

    def out_of_stock(self, version: str) -> str:
        """SET: items out of stock when ``version`` was published (live changes since apply on top)."""
        return f"{self.ns(version)}out_of_stock"

    def hidden(self, version: str) -> str:
        """SET: items hidden when ``version`` was published (live changes since apply on top)."""
        return f"{self.ns(version)}hidden"

    def categories(self, version: str) -> str:
        """STRING: JSON list of categories that have a popular list."""
        return f"{self.ns(version)}categories"


List = tuple[list[str], list[float]]
"""One published list: item ids, best first, and their scores."""


def encode(
    items: list[str] | np.ndarray, scores: list[float] | np.ndarray, behind: list[str | None] | None = None
) -> bytes:
    """The JSON value of one list: ``{"items": [...], "scores": [...]}``; with ``behind`` (the past item behind
    each, or None) also ``"viewed"``, those past items once each, and ``"because"``, each item's index in it (-1)."""
    value: dict[str, object] = {"items": items, "scores": np.asarray(scores, dtype=np.float64).round(6)}
    if behind is not None:
        viewed = [i for i in dict.fromkeys(behind) if i is not None]
        at = {item: k for k, item in enumerate(viewed)}
        value["viewed"], value["because"] = viewed, [at.get(i, -1) if i is not None else -1 for i in behind]
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(value: str | bytes | None) -> tuple[list[str], list[float]]:
    """Inverse of :func:`encode` (empty lists for a missing value)."""
    if value is None:
        return [], []
    data = orjson.loads(value)
    return list(data["items"]), list(data["scores"])


Behind = tuple[list[str], list[int]]
"""A list's past items (``viewed``) and, per position, the index of the one behind it (-1: none)."""


def decode_behind(value: str | bytes | None) -> tuple[list[str], list[float], Behind | None]:
    """Inverse of :func:`encode` with the past items behind the items (None: the list has no reasons)."""
    if value is None:
        return [], [], None
    data = orjson.loads(value)
    behind = (data["viewed"], data["because"]) if "because" in data else None
    return data["items"], data["scores"], behind
