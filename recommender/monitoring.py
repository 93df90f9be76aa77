"""Data drift between what the production model learned from and what shoppers do now.

The reference is the production model's training snapshot; both sides are compared over a
window of the same length (``RECSYS_DRIFT_WINDOW_DAYS``) ending at each side's newest event:

* item popularity: PSI of the share of interactions per item (the reference's top items,
  everything else in one bucket), so a reshuffled catalogue shows even at the same volume;
* event-type mix: PSI of the shares of views, carts, purchases;
* unknown users and items: shares of current events whose user / item the model never saw;
* volume: events per day, current over reference.

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

from recommender.bundle import Bundle
from recommender.config import Settings
from recommender.evaluation import accuracy_at, target_ranks
from recommender.store import Store

EPS = 1e-4
TOP_ITEMS = 50
SECONDS_PER_DAY = 86_400.0


@dataclass
class DriftReport:
    """The measures, their thresholds and which were breached."""

    reference_snapshot: int
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


def _window(events: pa.Table, days: float) -> pa.Table:
    ts = events.column("timestamp").cast(pa.int64()).to_numpy() / 1e6
    return events.filter(pa.array(ts >= ts.max() - days * SECONDS_PER_DAY)) if len(ts) else events


def _counts(column: pa.ChunkedArray, buckets: list[str]) -> np.ndarray:
    """Counts of ``buckets`` in ``column``, plus one bucket for everything else."""
    values = column.to_pandas().value_counts()
    known = np.array([values.get(b, 0) for b in buckets], dtype=np.float64)
    return np.append(known, len(column) - known.sum())


def measure_drift(reference: pa.Table, current: pa.Table, window_days: float) -> dict[str, float]:
    """The drift measures between two events tables (each cut to its own last ``window_days``)."""
    ref, cur = _window(reference, window_days), _window(current, window_days)
    top = ref.column("item_id").to_pandas().value_counts().index[:TOP_ITEMS].tolist()
    types = sorted(set(ref.column("event_type").to_pylist()) | set(cur.column("event_type").to_pylist()))
    known_users = reference.column("user_id").combine_chunks().unique()
    known_items = reference.column("item_id").combine_chunks().unique()
    n = max(cur.num_rows, 1)
    return {
        "item_popularity_psi": psi(_counts(ref.column("item_id"), top), _counts(cur.column("item_id"), top)),
        "event_type_psi": psi(_counts(ref.column("event_type"), types), _counts(cur.column("event_type"), types)),
        "unknown_user_share": 1 - pc.sum(pc.is_in(cur.column("user_id"), value_set=known_users)).as_py() / n,
        "unknown_item_share": 1 - pc.sum(pc.is_in(cur.column("item_id"), value_set=known_items)).as_py() / n,
        "volume_ratio": cur.num_rows / max(ref.num_rows, 1),
        "reference_events": float(ref.num_rows),
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
    reference_snapshot: int,
    current_snapshot: int | None = None,
    store: Store | None = None,
    bundle: Bundle | None = None,
) -> DriftReport:
    """Compare the reference snapshot's last window with the current snapshot's last window.

    With the production ``bundle``, also score it on what happened after its data (:func:`forward_accuracy`);
    each snapshot is read once for both.
    """
    store = store or Store(settings)
    columns = ("user_id", "item_id", "event_type", "timestamp")
    current_id = current_snapshot if current_snapshot is not None else store.current_snapshot_id()
    if current_id is None:
        raise LookupError("the events table is empty: nothing to monitor")
    reference, current = store.read_events(reference_snapshot, columns), store.read_events(current_id, columns)
    measures = measure_drift(reference, current, settings.drift_window_days)
    bands = thresholds(settings)
    breached = [name for name, (low, high) in bands.items() if not low <= measures[name] <= high]
    if bundle is not None and reference.num_rows:  # model health is reported, not thresholded
        newest = pc.max(reference.column("timestamp").cast(pa.int64())).as_py() / 1e6
        measures |= forward_accuracy(bundle, current, newest, settings.k)
    return DriftReport(reference_snapshot, current_id, settings.drift_window_days, measures, bands, breached)


def forward_accuracy(bundle: Bundle, current: pa.Table, since: float, k: int) -> dict[str, float]:
    """The production model on what happened after its training data: per known user, their first
    new item (known to the model, not in their history) after ``since`` (unix seconds) is the target."""
    ts = current.column("timestamp").cast(pa.int64()).to_numpy() / 1e6
    later = current.filter(pa.array(ts > since))
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
    recommended, _ = bundle.model.recommend(rows, history, k)
    ranks = target_ranks(recommended, i[first])
    accuracy = accuracy_at(ranks, k)
    return {
        "forward_users": float(len(rows)),
        f"forward_hr_at_{k}": accuracy[f"hr_at_{k}"],
        f"forward_ndcg_at_{k}": accuracy[f"ndcg_at_{k}"],
    }
