"""From stored events to the users x items confidence matrix, and the evaluation split.

:class:`Interactions` holds every event of a snapshot as integer codes into a
:class:`Vocabulary` (which travels with the model). :func:`leave_last_out` holds out
each user's last and second-to-last distinct items; :func:`confidence` turns any subset
of events into a CSR matrix with event-type weights, optional time decay and BM25.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Vocabulary:
    """External ids <-> matrix rows/columns."""

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_index", {u: i for i, u in enumerate(self.users)})
        object.__setattr__(self, "_item_index", {t: i for i, t in enumerate(self.items)})

    def user_rows(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Row of each user id, -1 when unknown."""
        index: dict[str, int] = self._user_index  # type: ignore[attr-defined]
        return np.array([index.get(u, -1) for u in ids], dtype=np.int64)

    def item_cols(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Column of each item id, -1 when unknown."""
        index: dict[str, int] = self._item_index  # type: ignore[attr-defined]
        return np.array([index.get(t, -1) for t in ids], dtype=np.int64)

    def save(self, folder: Path) -> None:
        """Write ``users.json`` and ``items.json`` into ``folder``."""
        (folder / "users.json").write_text(json.dumps(self.users.tolist()))
        (folder / "items.json").write_text(json.dumps(self.items.tolist()))

    @classmethod
    def load(cls, folder: Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        users = np.array(json.loads((folder / "users.json").read_text()), dtype=object)
        items = np.array(json.loads((folder / "items.json").read_text()), dtype=object)
        return cls(users=users, items=items)


@dataclass(frozen=True)
class Interactions:
    """All events of a snapshot as codes, sorted by time."""

    vocab: Vocabulary
    user: np.ndarray  # int32 row per event
    item: np.ndarray  # int32 column per event
    event_type: np.ndarray  # int code per event, into ``event_types``
    ts: np.ndarray  # float64 unix seconds per event
    event_types: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(users, items)."""
        return len(self.vocab.users), len(self.vocab.items)

    def __len__(self) -> int:
        return len(self.user)


def interactions_from_events(events: pa.Table) -> Interactions:
    """Encode an events table (as stored) into :class:`Interactions`."""
    if events.num_rows == 0:
        raise ValueError("the snapshot holds no events: ingest some first (`recsys ingest FILE`)")
    user_codes, users = _sorted_codes(events.column("user_id"))
    item_codes, items = _sorted_codes(events.column("item_id"))
    type_codes, types = _sorted_codes(events.column("event_type"))
    ts = events.column("timestamp").cast(pa.int64()).to_numpy() / 1e6
    order = np.lexsort((item_codes, user_codes, ts))  # by time, ties broken by ids: deterministic
    return Interactions(
        vocab=Vocabulary(users=users, items=items),
        user=user_codes[order],
        item=item_codes[order],
        event_type=type_codes[order],
        ts=ts[order],
        event_types=tuple(str(t) for t in types),
    )


def _sorted_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes into the sorted distinct values (Arrow dictionary encoding: no Python objects per row)."""
    encoded = column.combine_chunks().dictionary_encode()
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, np.asarray(encoded.dictionary.take(pa.array(order)).to_pylist(), dtype=object)


@dataclass(frozen=True)
class Weighting:
    """How events become confidence values."""

    event_weights: dict[str, float]
    half_life_days: float | None = None
    """Time decay: an event this many days older than the newest weighs half. None: no decay."""
    recency_half_life: float | None = None
    """Per-user recency: a user's event this many events before their latest weighs half. None: off."""
    bm25: bool = False
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    log_scale: bool = False
    """Use log1p of the summed weight (dampens heavy repeat viewers)."""


def confidence(inter: Interactions, mask: np.ndarray, weighting: Weighting) -> sp.csr_matrix:
    """The users x items matrix of the events selected by ``mask``, weighted and summed."""
    per_type = np.array([weighting.event_weights.get(t, 0.0) for t in inter.event_types], dtype=np.float64)
    weights = per_type[inter.event_type[mask]]
    if weighting.half_life_days is not None and mask.any():
        age_days = (inter.ts[mask].max() - inter.ts[mask]) / SECONDS_PER_DAY
        weights = weights * np.power(0.5, age_days / max(weighting.half_life_days, 1e-9))
    if weighting.recency_half_life is not None and mask.any():
        weights = weights * np.power(
            0.5, events_before_latest(inter.user[mask], inter.shape[0]) / weighting.recency_half_life
        )
    matrix = sp.coo_matrix((weights, (inter.user[mask], inter.item[mask])), shape=inter.shape).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    if weighting.log_scale:
        matrix.data = np.log1p(matrix.data)
    if weighting.bm25:
        from implicit.nearest_neighbours import bm25_weight

        matrix = bm25_weight(matrix, K1=weighting.bm25_k1, B=weighting.bm25_b).tocsr()
    return matrix.astype(np.float32)


def events_before_latest(users: np.ndarray, n_users: int) -> np.ndarray:
    """For time-ordered events, how many of the same user's events come after each one (0 = latest)."""
    order = np.argsort(users, kind="stable")  # by user, time order kept within a user
    counts = np.bincount(users, minlength=n_users)
    starts = np.cumsum(counts) - counts
    position = np.empty(len(users), dtype=np.int64)
    position[order] = np.arange(len(users)) - starts[users[order]]
    return (counts[users] - 1 - position).astype(np.float64)


@dataclass(frozen=True)
class Split:
    """Chronological leave-last-out: per evaluated user, a validation and a test item."""

    train: np.ndarray  # bool mask over events: neither held-out item
    train_val: np.ndarray  # bool mask: everything but the test item
    users: np.ndarray  # evaluated user rows
    val_items: np.ndarray  # second-to-last distinct item per evaluated user
    test_items: np.ndarray  # last distinct item per evaluated user


def leave_last_out(inter: Interactions, min_items: int = 3) -> Split:
    """Hold out each user's last (test) and second-to-last (validation) distinct item.

    Items are ordered by the time the user first touched them; all events of a held-out
    item are held out, so the target is never among the "seen" items that scoring filters.
    Users with fewer than ``min_items`` distinct items are only trained on.
    """
    n_users, n_items = inter.shape
    key = inter.user.astype(np.int64) * n_items + inter.item
    pair_key, first = np.unique(key, return_index=True)  # events are time-sorted: first touch
    pair_user = pair_key // n_items
    order = np.lexsort((first, pair_user))  # per user, items in the order first touched
    pair_key, pair_user = pair_key[order], pair_user[order]
    counts = np.bincount(pair_user, minlength=n_users)
    ends = np.cumsum(counts)
    users = np.flatnonzero(counts >= min_items)
    test_key, val_key = pair_key[ends[users] - 1], pair_key[ends[users] - 2]
    is_test = np.isin(key, test_key)
    is_val = np.isin(key, val_key)
    return Split(
        train=~is_test & ~is_val,
        train_val=~is_test,
        users=users.astype(np.int64),
        val_items=val_key % n_items,
        test_items=test_key % n_items,
    )


@dataclass(frozen=True)
class Sequences:
    """Each user's items in time order (repeats in a row collapsed): what a sequential model reads."""

    indptr: np.ndarray  # int64, users + 1
    items: np.ndarray  # int32 item columns, oldest first within a user

    def of(self, user: int) -> np.ndarray:
        """The items of user row ``user``, oldest first."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def lists(self) -> list[list[int]]:
        """Every user's items, oldest first, as lists."""
        return [self.of(u).tolist() for u in range(len(self.indptr) - 1)]

    def save(self, path: Path) -> None:
        """Write both arrays into one ``.npz`` file."""
        np.savez(path, indptr=self.indptr, items=self.items)

    @classmethod
    def load(cls, path: Path) -> Sequences:
        """Read a file written by :meth:`save`."""
        with np.load(path) as arrays:
            return cls(indptr=arrays["indptr"], items=arrays["items"])


def sequences(inter: Interactions, mask: np.ndarray) -> Sequences:
    """The events selected by ``mask`` as per-user item sequences (events are time-sorted already)."""
    users, items = inter.user[mask], inter.item[mask]
    order = np.argsort(users, kind="stable")  # by user, time order kept
    users, items = users[order], items[order]
    repeat = np.zeros(len(items), dtype=bool)
    repeat[1:] = (users[1:] == users[:-1]) & (items[1:] == items[:-1])
    users, items = users[~repeat], items[~repeat]
    counts = np.bincount(users, minlength=inter.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Sequences(indptr=indptr, items=items.astype(np.int32))
