"""Publishing: precompute every list the API serves and flip the active version atomically.

A publish writes a whole new version namespace with pipelined writes: :func:`begin` the
shared lists (popular overall and per category, the catalog), :func:`write_shard` the
per-user top-N and similar items, split into ``RECSYS_PUBLISH_SHARDS`` parts that can run in
parallel (the retrain DAG maps them onto Airflow workers); then :func:`finish` checks that
every shard was written and in one MULTI/EXEC sets the active pointer and the list of kept
versions, then deletes versions that are neither kept nor active. A publish killed midway
leaves the previous version active and complete; its partial keys are removed by the next
publish.

Erasure is final: a pseudonym that asked to be forgotten (tombstoned in the store, or queued by the
API in ``forget:pending``) gets no list in any version written, and :func:`finish` and a flip back to a
kept copy remove whatever such a user holds in the version about to be served (a deletion that came
while it was being written), whichever model bundle it comes from.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from recommender.config import Settings
from recommender.data.catalog import DETAIL_FIELDS, details_of
from recommender.data.store import Store
from recommender.modeling.bundle import Bundle
from recommender.modeling.sequential import export_bytes
from recommender.online.audiences import forget_in_audiences
from recommender.online.experiments import start_experiment
from recommender.online.keys import Keys, encode
from recommender.online.live import CLOCK_MARGIN_SECONDS, Overrides, compact_live, newer_than, read_live
from recommender.progress import ProgressFn, no_progress
from recommender.registry.newitems import content_index, write_content, write_tastes


@dataclass(frozen=True)
class Published:
    """What a publish wrote."""

    version: str
    model_version: str
    users: int
    items: int
    categories: int
    previous: str | None
    removed: list[str]
    reused: bool
    seconds: float
    withheld: int = 0
    """Forgotten users of the bundle given no list (or whose list was removed before serving)."""

    def to_dict(self) -> dict[str, object]:
        """Plain fields."""
        return asdict(self)


def _encoded(
    keys: list[str], ids: np.ndarray, scores: np.ndarray, names: np.ndarray, behind: np.ndarray | None = None
) -> dict[str, bytes]:
    """key -> encoded list, for one batch of rows (-1 ids dropped); with the past item ``behind`` each one."""
    out = {}
    for k, (key, row_ids, row_scores) in enumerate(zip(keys, ids, scores, strict=True)):
        valid = row_ids >= 0
        reasons = None
        if behind is not None:
            cols = behind[k][valid]
            found = names[np.maximum(cols, 0)].tolist()
            reasons = [f if c >= 0 else None for f, c in zip(found, cols.tolist(), strict=True)]
        out[key] = encode(names[row_ids[valid]].tolist(), row_scores[valid], reasons)
    return out


@dataclass(frozen=True)
class CatalogView:
    """The catalog a version is published with: the items table with the live changes newer than each row."""

    categories: dict[str, str]
    details: dict[str, str]
    out_of_stock: list[str]
    hidden: list[str]
    read_at: float
    updated: dict[str, float] = field(default_factory=dict)
    """Item -> when its row or a live field of it last changed (unix seconds): the newest new items first."""


def catalog_view(catalog: pa.Table | None, live: Overrides, read_at: float) -> CatalogView:
    """Merge the items table with live changes (newest wins per item row) into what a publish writes."""
    rows: dict[str, dict[str, Any]] = {}
    stamps: dict[str, float] = {}
    if catalog is not None and catalog.num_rows:
        for row in catalog.select(["item_id", *DETAIL_FIELDS, "attributes", "updated_at"]).to_pylist():
            rows[row["item_id"]] = details_of(row)
            stamps[row["item_id"]] = row["updated_at"].timestamp()
    for item, fields in newer_than(live, stamps).items():
        rows[item] = {**rows.get(item, dict.fromkeys(DETAIL_FIELDS)), **fields}
        stamps[item] = max(at for _, at in live[item].values())
    return CatalogView(
        categories={i: r["category"] for i, r in rows.items() if r.get("category")},
        details={i: json.dumps(r) for i, r in rows.items()},
        out_of_stock=[i for i, r in rows.items() if r.get("in_stock") is False],
        hidden=[i for i, r in rows.items() if r.get("hidden")],
        read_at=read_at,
        updated=stamps,
    )


def _write_bought(r: redis.Redis, keys: Keys, version: str, bundle: Bundle, rows: np.ndarray) -> None:
    """The purchase history (item, last time) of the users in ``rows`` who bought anything."""
    assert bundle.bought is not None
    part = bundle.bought[rows]
    lists = {}
    for k, user in enumerate(bundle.vocab.users[rows]):
        lo, hi = part.indptr[k], part.indptr[k + 1]
        if lo < hi:
            order = np.argsort(-part.data[lo:hi], kind="stable")
            cols, times = part.indices[lo:hi][order], part.data[lo:hi][order]
            lists[keys.bought(version, str(user))] = encode(bundle.vocab.items[cols].tolist(), times)
    if lists:
        r.mset(lists)


def _write_sequences(r: redis.Redis, keys: Keys, version: str, bundle: Bundle, rows: np.ndarray) -> None:
    """Each user's newest items (as many as the sequential model reads), for re-scoring with session events."""
    part = bundle.model.sequence_part()
    if part is None or bundle.sequences is None:
        return
    newest, seqs, items = int(part[0].params["max_len"]), bundle.sequences, bundle.vocab.items
    lists = {
        keys.sequence(version, str(user)): json.dumps(items[seqs.of(int(row))[-newest:]].tolist())
        for row, user in zip(rows, bundle.vocab.users[rows], strict=True)
        if seqs.indptr[row + 1] > seqs.indptr[row]
    }
    if lists:
        r.mset(lists)


def _slice(n: int, shard: int, shards: int, batch: int) -> np.ndarray:
    """Rows of ``shard`` out of ``shards`` contiguous parts of ``range(n)``, cut on the ``batch`` grid.

    Whole scoring batches go to each shard, so a user is scored in the same batch (the same
    matrix shapes, hence the same floating-point sums) however many shards a publish has.
    """
    batches = np.array_split(np.arange(-(-n // batch)), shards)[shard]
    if not len(batches):
        return np.arange(0)
    return np.arange(int(batches[0]) * batch, min(n, (int(batches[-1]) + 1) * batch))


def _write_shared(
    r: redis.Redis, keys: Keys, version: str, bundle: Bundle, settings: Settings, catalog: pa.Table | None
) -> dict[str, float]:
    """Start ``version``: the popular lists, categories and catalog; returns counts. Flips nothing.

    The per-user and similar-item lists are written by :func:`write_shard` (one or many, in any
    order or in parallel), then :func:`finish` checks every shard and flips.
    """
    vocab = bundle.vocab
    batch = settings.publish_batch
    r.set(keys.lease(version), "1", ex=settings.publish_lease_seconds)  # before anything can see it as started
    r.sadd(keys.started, version)
    popularity = bundle.popularity()
    order = np.argsort(-popularity, kind="stable")
    read_at = time.time()
    view = catalog_view(catalog, read_live(r, keys), read_at)
    cats, details = view.categories, view.details
    pipe = r.pipeline(transaction=False)
    top = order[: settings.top_n]
    pipe.set(keys.popular(version), encode(vocab.items[top].tolist(), popularity[top]))
    by_cat: dict[str, list[int]] = {}
    for col in order:
        cat = cats.get(str(vocab.items[col]))
        if cat is not None and len(by_cat.setdefault(cat, [])) < settings.top_n:
            by_cat[cat].append(int(col))
    for cat, members in by_cat.items():
        pipe.set(keys.popular(version, cat), encode(vocab.items[members].tolist(), popularity[members]))
    pipe.set(keys.categories(version), json.dumps(sorted(by_cat)))
    if (weights := export_bytes(bundle.model, vocab.items)) is not None:
        pipe.set(keys.sequence_model(version), base64.b64encode(weights))  # the API's clients decode text
    intervals = bundle.info.get("repurchase_intervals") or {}
    if intervals:
        pipe.hset(keys.repurchase(version), mapping={c: str(v) for c, v in intervals.items()})
    entries = iter(details.items())
    while chunk := dict(islice(entries, batch)):  # (a list of all items per batch was quadratic in the catalog)
        pipe.hset(keys.items(version), mapping=chunk)  # type: ignore[arg-type]
    for key, gone in ((keys.out_of_stock(version), view.out_of_stock), (keys.hidden(version), view.hidden)):
        for lo in range(0, len(gone), batch):
            pipe.sadd(key, *gone[lo : lo + batch])
    pipe.execute()
    index = content_index(bundle, details, view.updated, settings.new_item_max_users, settings.new_items_max)
    written = write_content(r, keys, version, index, settings.similar_n, batch) if index is not None else {}
    return {
        **written,
        "users": len(vocab.users),
        "items": len(vocab.items),
        "categories": len(by_cat),
        "catalog_read_at": round(view.read_at, 3),
        "unavailable": len(set(view.out_of_stock) | set(view.hidden)),
    }


def forgotten(r: redis.Redis, keys: Keys, settings: Settings) -> frozenset[str]:
    """Every pseudonym that asked to be forgotten: tombstoned in the store, or queued by the API."""
    stored = Store(settings).forgotten_users().to_pylist()
    return frozenset(stored) | {str(u) for u in r.smembers(keys.forget_pending)}


def withhold(r: redis.Redis, keys: Keys, version: str, users: Collection[str]) -> int:
    """Delete ``users``' lists (recommended, bought, sequence) and audience places in ``version``; returns how many
    users had any list."""
    held = 0
    names = sorted(users)
    for lo in range(0, len(names), 1000):
        pipe = r.pipeline(transaction=False)
        for u in names[lo : lo + 1000]:
            pipe.unlink(*keys.personal(version, u))
        held += sum(1 for gone in pipe.execute() if int(gone))
    forget_in_audiences(r, keys, [version], names)  # a kept copy's audiences too, before it is served again
    return held


def write_shard(
    r: redis.Redis,
    keys: Keys,
    version: str,
    bundle: Bundle,
    settings: Settings,
    shard: int = 0,
    shards: int = 1,
    progress: ProgressFn = no_progress,
    erased: Collection[str] | None = None,
) -> dict[str, int]:
    """Write part ``shard`` of ``shards`` of the user and similar-item lists; record it as done.

    Users in ``erased`` (by default :func:`forgotten`, read now) get no list: they are scored with their
    batch, so everyone else's scores stay those of any other publish, and their rows are dropped.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    erased = forgotten(r, keys, settings) if erased is None else erased
    withheld = 0
    model, vocab = bundle.model, bundle.vocab
    n_users, n_items = len(vocab.users), len(vocab.items)
    batch = settings.publish_batch
    shown = np.zeros(n_items, dtype=bool)
    users, items = _slice(n_users, shard, shards, batch), _slice(n_items, shard, shards, batch)
    for lo in range(0, len(users), batch):
        _renew(r, keys, version, settings)
        rows = users[lo : lo + batch]
        scored = lo + len(rows)
        ids, scores = bundle.recommend(rows, settings.top_n)
        if erased:
            keep = np.array([str(u) not in erased for u in vocab.users[rows]], dtype=bool)
            withheld += int((~keep).sum())
            rows, ids, scores = rows[keep], ids[keep], scores[keep]
        if len(rows):  # a batch of forgotten users only writes nothing (an empty MSET is an error)
            shown[ids[ids >= 0]] = True
            behind = bundle.because(rows, ids)
            user_keys = [keys.user(version, str(u)) for u in vocab.users[rows]]
            r.mset(_encoded(user_keys, ids, scores, vocab.items, behind))
            if bundle.bought is not None:
                _write_bought(r, keys, version, bundle, rows)
            _write_sequences(r, keys, version, bundle, rows)
            write_tastes(r, keys, version, bundle, rows)
        progress("users", scored, len(users))
    for lo in range(0, len(items), batch):
        _renew(r, keys, version, settings)
        cols = items[lo : lo + batch]
        ids, scores = model.similar_items(cols, settings.similar_n)
        r.mset(_encoded([keys.similar(version, str(t)) for t in vocab.items[cols]], ids, scores, vocab.items))
        if bundle.together is not None:
            ids, scores = bundle.together[0][cols], bundle.together[1][cols]
            found = (ids >= 0).any(axis=1)
            together_keys = [keys.together(version, str(t)) for t in vocab.items[cols][found]]
            if together_keys:
                r.mset(_encoded(together_keys, ids[found], scores[found], vocab.items))
        progress("similar items", lo + len(cols), len(items))
    # which items this shard's users were shown, for the catalogue coverage computed at the flip
    _renew(r, keys, version, settings)  # never record a shard into a version that was cleaned up
    done: dict[str, str] = {
        f"shard:{shard}/{shards}": np.packbits(shown).tobytes().hex(),
        f"withheld:{shard}/{shards}": str(withheld),
    }
    r.hset(keys.meta(version), mapping=done)  # type: ignore[arg-type]
    return {"shard": shard, "users": len(users) - withheld, "items": len(items), "withheld": withheld}


class IncompletePublishError(RuntimeError):
    """A version cannot be written or flipped to: shards are missing, or it was abandoned and cleaned up."""


def _renew(r: redis.Redis, keys: Keys, version: str, settings: Settings) -> None:
    """Extend ``version``'s lease; raise when it is gone (the publish was abandoned and may be cleaned up)."""
    if not r.expire(keys.lease(version), settings.publish_lease_seconds):
        raise IncompletePublishError(
            f"version {version} is not being published any more (its lease expired or it was cleaned up); publish again"
        )


def _coverage(r: redis.Redis, keys: Keys, version: str, shards: int, n_items: int) -> float:
    """Share of the catalogue in any user list of ``version``, from its shards' records (removed after)."""
    fields = [f"shard:{s}/{shards}" for s in range(shards)]
    records = r.hmget(keys.meta(version), fields)
    missing = [s for s, value in enumerate(records) if value is None]
    if missing:
        raise IncompletePublishError(f"version {version}: shard(s) {missing} of {shards} not written; not flipped")
    shown = np.zeros(n_items, dtype=bool)
    for value in records:
        shown |= np.unpackbits(np.frombuffer(bytes.fromhex(str(value)), dtype=np.uint8), count=n_items).astype(bool)
    r.hdel(keys.meta(version), *fields)
    return float(shown.mean()) if n_items else 0.0


def flip(r: redis.Redis, keys: Keys, version: str, keep: int) -> tuple[str | None, list[str]]:
    """Atomically make ``version`` active (kept first in the versions list); returns (previous, removed)."""
    with r.pipeline(transaction=True) as pipe:
        pipe.get(keys.active)
        pipe.set(keys.active, version)
        pipe.lrem(keys.versions, 0, version)
        pipe.lpush(keys.versions, version)
        pipe.ltrim(keys.versions, 0, keep - 1)
        previous = pipe.execute()[0]
    return previous, cleanup(r, keys)


def cleanup(r: redis.Redis, keys: Keys) -> list[str]:
    """Delete every started version that is neither kept nor active nor being written (abandoned partial
    ones included: a failed publish gives its lease up, a killed one's lease expires)."""
    kept = {str(v) for v in r.lrange(keys.versions, 0, -1)} | {str(r.get(keys.active)), str(r.get(keys.challenger))}
    removed = []
    for version in sorted({str(v) for v in r.smembers(keys.started)} - kept):
        if r.exists(keys.lease(version)):
            continue
        for chunk in _chunks(r.scan_iter(match=keys.ns(version) + "*", count=5000), 5000):
            r.unlink(*chunk)
        r.srem(keys.started, version)
        removed.append(version)
    compact(r, keys, kept)
    return removed


def compact(r: redis.Redis, keys: Keys, kept: set[str]) -> int:
    """Remove the live catalog fields every version still served or being written holds already; returns how many.

    The cut-off is the oldest catalog-read time among those versions (less the clock margin); a version
    being written that has not recorded its read time yet makes this a no-op, to be done next time.
    """
    versions = (kept | {str(v) for v in r.smembers(keys.started)}) - {"None"}
    read_at = [r.hget(keys.meta(v), "catalog_read_at") for v in sorted(versions)]
    if not read_at or any(t is None for t in read_at):
        return 0
    return compact_live(r, keys, min(float(str(t)) for t in read_at) - CLOCK_MARGIN_SECONDS)


def _chunks(it: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in it:
        chunk.append(key)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def find_published(r: redis.Redis, keys: Keys, model_version: str) -> str | None:
    """A kept, complete published version of ``model_version``, if any."""
    for version in map(str, r.lrange(keys.versions, 0, -1)):
        meta = r.hgetall(keys.meta(version))
        if meta.get("model_version") == model_version and meta.get("complete") == "1":
            return version
    return None


def publish(
    r: redis.Redis,
    settings: Settings,
    bundle: Bundle,
    model_version: str,
    catalog: pa.Table | None = None,
    progress: ProgressFn = no_progress,
    reuse: bool = False,
    challenger: bool = False,
) -> Published:
    """Publish ``bundle`` as a new version (or, with ``reuse``, flip back to a kept copy of it).

    With ``challenger`` the version is written completely but not made active: ``{prefix}:challenger``
    points at it and the API serves it to ``RECSYS_EXPERIMENT_SHARE`` of the users.
    """
    keys = Keys(settings.redis_prefix)
    existing = find_published(r, keys, model_version) if reuse else None
    if existing:
        withheld = withhold(r, keys, existing, forgotten(r, keys, settings))
        previous, removed = flip(r, keys, existing, settings.keep_versions)
        return _published(r.hgetall(keys.meta(existing)), existing, previous, removed, True, withheld)
    version = begin(r, settings, bundle, model_version, catalog)
    shards = settings.publish_shards
    try:
        for shard in range(shards):
            write_shard(r, keys, version, bundle, settings, shard, shards, progress)
    except BaseException:
        r.delete(keys.lease(version))  # abandoned: the next publish cleans it up
        raise
    return finish(r, settings, version, challenger)


def begin(
    r: redis.Redis, settings: Settings, bundle: Bundle, model_version: str, catalog: pa.Table | None = None
) -> str:
    """Start a new version of ``model_version`` (shared lists and its meta record); returns its name."""
    keys = Keys(settings.redis_prefix)
    version = f"m{model_version}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    counts = _write_shared(r, keys, version, bundle, settings, catalog)
    r.hset(
        keys.meta(version),
        mapping={
            "model_version": model_version,
            "started_at": datetime.now(UTC).isoformat(),
            "snapshot_id": str(bundle.info.get("snapshot_id", "")),
            "family": str(bundle.info.get("family", "")),
            "shards": str(settings.publish_shards),
            "calibration": json.dumps(bundle.info.get("rank_calibration") or []),  # revenue-aware placements
            **{k: str(v) for k, v in counts.items()},
        },
    )
    return version


def finish(r: redis.Redis, settings: Settings, version: str, challenger: bool = False) -> Published:
    """After every shard of ``version`` was written: mark it complete and flip to it (or make it the challenger).

    Raises :class:`IncompletePublishError` (and flips nothing) when a shard is missing.
    """
    keys = Keys(settings.redis_prefix)
    meta = r.hgetall(keys.meta(version))
    if not meta.get("started_at"):
        raise IncompletePublishError(f"version {version} was never started (or was cleaned up); publish again")
    shards = int(meta["shards"])
    coverage = _coverage(r, keys, version, shards, int(meta["items"]))
    per_shard = [f"withheld:{s}/{shards}" for s in range(shards)]
    skipped = sum(int(meta.get(field, 0)) for field in per_shard)
    withheld = skipped + withhold(r, keys, version, forgotten(r, keys, settings))  # forgotten while it was written
    r.hdel(keys.meta(version), *per_shard)
    published_at = datetime.now(UTC).isoformat()
    done = {"coverage": f"{coverage:.4f}", "published_at": published_at, "withheld": str(withheld), "complete": "1"}
    r.hset(keys.meta(version), mapping=done)  # type: ignore[arg-type]
    if challenger:
        previous = start_experiment(r, keys, version)  # a new experiment: its counts start at zero
        removed = cleanup(r, keys)
    else:
        previous, removed = flip(r, keys, version, settings.keep_versions)
    r.delete(keys.lease(version))  # served now: being kept or active protects it from here on
    return _published(meta, version, previous, removed, False, withheld)


def _published(
    meta: dict[Any, Any], version: str, previous: str | None, removed: list[str], reused: bool, withheld: int
) -> Published:
    """What a publish did, from the version's ``meta`` record."""
    seconds = 0.0 if reused else (datetime.now(UTC) - datetime.fromisoformat(str(meta["started_at"]))).total_seconds()
    return Published(
        version,
        str(meta["model_version"]),
        int(meta["users"]),
        int(meta["items"]),
        int(meta["categories"]),
        previous,
        removed,
        reused,
        round(seconds, 3),
        withheld,
    )
