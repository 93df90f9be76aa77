"""Data drift between what the production model learned from and what shoppers do now.

The reference is the :class:`~recommender.data.profile.Profile` logged with the production model
version at training time (so it outlives its snapshot, which forgetting may expire); the
current side is the newest snapshot's last window of the same length:

* item popularity: PSI of the share of interactions per item (the reference's top items,
  everything else in one bucket), so a reshuffled catalogue shows even at the same volume;
* event-type mix: PSI of the shares of views, carts, purchases;
* unknown users and items: shares of current events whose user / item the model never saw
  (the model's own vocabulary);
* volume: events per window, current over reference.

Model health goes with it: :func:`forward_accuracy` scores the production model on what users
did after its training data (HR/NDCG of each known user's first new item), and the publish
records the catalogue coverage of the served lists.

Each has a threshold in settings; :class:`DriftReport` says which were breached. Evidently was
the first choice for the report; its 0.7 line does not import under pandas 3 (it uses a removed
pandas internal), so the measures are computed here with numpy (a few lines each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recommender.config import Settings
from recommender.data.profile import Profile, seconds, window
from recommender.data.store import Store
from recommender.modeling.bundle import Bundle
from recommender.modeling.evaluation import accuracy_at, target_ranks

EPS = 1e-4
COLUMNS = ("user_id", "item_id", "event_type", "timestamp")


@dataclass
class DriftReport:
    """The measures, their thresholds and which were breached."""

    reference_snapshot: int | None
    current_snapshot: int
    window_days: float
    measures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    breached: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """True when any measure is outside its band."""
        return bool(self.breached)

    def to_dict(self) -> dict[str, object]:
        """Plain fields plus ``drifted``."""
        return {**asdict(self), "drifted": self.drifted}

    def to_json(self) -> str:
        """One machine-readable line."""
        return json.dumps(self.to_dict(), sort_keys=True)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors over the same buckets."""
    r = np.maximum(reference / max(reference.sum(), 1), EPS)
    c = np.maximum(current / max(current.sum(), 1), EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def _counts(column: pa.ChunkedArray, buckets: list[str]) -> np.ndarray:
    """Counts of ``buckets`` in ``column``, plus one bucket for everything else."""
    values = column.to_pandas().value_counts()
    known = np.array([values.get(b, 0) for b in buckets], dtype=np.float64)
    return np.append(known, len(column) - known.sum())


def _unknown_share(column: pa.ChunkedArray, known: np.ndarray) -> float:
    if not len(column):
        return 0.0
    return 1 - (pc.sum(pc.is_in(column, value_set=pa.array(known.astype(str)))).as_py() or 0) / len(column)


def measure_drift(
    reference: Profile, current: pa.Table, known_users: np.ndarray, known_items: np.ndarray
) -> dict[str, float]:
    """The drift measures of ``current`` (cut to its last window) against the ``reference`` profile."""
    cur = window(current, reference.window_days)
    top = list(reference.items)
    ref_items = np.array([*reference.items.values(), reference.other_items], dtype=np.float64)
    types = sorted(set(reference.event_types) | set(cur.column("event_type").to_pylist()))
    ref_types = np.array([reference.event_types.get(t, 0) for t in types] + [0], dtype=np.float64)
    return {
        "item_popularity_psi": psi(ref_items, _counts(cur.column("item_id"), top)),
        "event_type_psi": psi(ref_types, _counts(cur.column("event_type"), types)),
        "unknown_user_share": _unknown_share(cur.column("user_id"), known_users),
        "unknown_item_share": _unknown_share(cur.column("item_id"), known_items),
        "volume_ratio": cur.num_rows / max(reference.events, 1),
        "reference_events": float(reference.events),
        "current_events": float(cur.num_rows),
    }


def thresholds(settings: Settings) -> dict[str, tuple[float, float]]:
    """Allowed (low, high) band of each measure."""
    return {
        "item_popularity_psi": (0.0, settings.drift_popularity_psi),
        "event_type_psi": (0.0, settings.drift_event_type_psi),
        "unknown_user_share": (0.0, settings.drift_unknown_user_share),
        "unknown_item_share": (0.0, settings.drift_unknown_item_share),
        "volume_ratio": (settings.drift_volume_low, settings.drift_volume_high),
    }


def check_drift(
    settings: Settings,
    reference: Profile,
    bundle: Bundle,
    current_snapshot: int | None = None,
    store: Store | None = None,
) -> DriftReport:
    """Compare the current snapshot's last window with the production model's reference profile, and score
    the model on what happened after its data (:func:`forward_accuracy`); the snapshot is read once for both."""
    store = store or Store(settings)
    current_id = current_snapshot if current_snapshot is not None else store.current_snapshot_id()
    if current_id is None:
        raise LookupError("the events table is empty: nothing to monitor")
    current = store.read_events(current_id, COLUMNS)
    measures = measure_drift(reference, current, bundle.vocab.users, bundle.vocab.items)
    bands = thresholds(settings)
    breached = [name for name, (low, high) in bands.items() if not low <= measures[name] <= high]
    measures |= forward_accuracy(bundle, current, reference.newest, settings.k)  # reported, not thresholded
    return DriftReport(reference.snapshot_id, current_id, reference.window_days, measures, bands, breached)


def forward_accuracy(bundle: Bundle, current: pa.Table, since: float, k: int) -> dict[str, float]:
    """The production model on what happened after its training data: per known user, their first
    new item (known to the model, not in their history) after ``since`` (unix seconds) is the target."""
    later = current.filter(pa.array(seconds(current) > since))
    users = bundle.vocab.user_rows(later.column("user_id").to_pylist())
    items = bundle.vocab.item_cols(later.column("item_id").to_pylist())
    order = np.argsort(later.column("timestamp").cast(pa.int64()).to_numpy(), kind="stable")
    history = bundle.user_items
    u, i = users[order], items[order]
    known = (u >= 0) & (i >= 0)
    u, i = u[known], i[known]
    if len(u):  # (scipy answers two empty index arrays with a sparse matrix, not an empty array)
        new = np.asarray(history[u, i]).ravel() == 0  # not in the user's training history
        u, i = u[new], i[new]
    if not len(u):
        return {"forward_users": 0.0}
    rows, first = np.unique(u, return_index=True)  # each user's first new item, in time order
    recommended, _ = bundle.recommend(rows, k)
    ranks = target_ranks(recommended, i[first])
    accuracy = accuracy_at(ranks, k)
    return {
        "forward_users": float(len(rows)),
        f"forward_hr_at_{k}": accuracy[f"hr_at_{k}"],
        f"forward_ndcg_at_{k}": accuracy[f"ndcg_at_{k}"],
    }
