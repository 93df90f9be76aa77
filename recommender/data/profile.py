"""A data profile: the aggregates drift is measured on, small enough to store with a model version.

Training computes the profile of its snapshot and logs it to MLflow with the model
(``reference/profile.json``), so monitoring compares the newest data with what the production
model learned from even after that snapshot was expired (forgetting a user expires every older
snapshot). A profile holds counts only, over the last ``window_days`` of its data: the most
interacted items and how often, the event-type mix, the volume, the time span. No user id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TOP_ITEMS = 50
SECONDS_PER_DAY = 86_400.0
ARTIFACT = "reference/profile.json"
"""Where training logs the profile, in the model version's run."""


@dataclass(frozen=True)
class Profile:
    """Counts describing the last ``window_days`` of an events table."""

    window_days: float
    newest: float
    """Unix seconds of the newest event (model health counts what came after it)."""
    events: int
    """Events in the window."""
    items: dict[str, int] = field(default_factory=dict)
    """The ``TOP_ITEMS`` most interacted items in the window and their counts."""
    event_types: dict[str, int] = field(default_factory=dict)
    snapshot_id: int | None = None
    total_events: int = 0

    @property
    def other_items(self) -> int:
        """Window events on items outside :attr:`items`."""
        return self.events - sum(self.items.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain fields (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def seconds(events: pa.Table) -> np.ndarray:
    """Event times as unix seconds."""
    return events.column("timestamp").cast(pa.int64()).to_numpy() / 1e6


def window(events: pa.Table, days: float) -> pa.Table:
    """The events of the last ``days`` before the newest one."""
    ts = seconds(events)
    return events.filter(pa.array(ts >= ts.max() - days * SECONDS_PER_DAY)) if len(ts) else events


def _counts(column: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counted = pc.value_counts(column).to_pylist() if len(column) else []
    return {str(c["values"]): int(c["counts"]) for c in counted}


def profile_of(events: pa.Table, window_days: float, snapshot_id: int | None = None) -> Profile:
    """Profile an events table (``item_id``, ``event_type``, ``timestamp``) over its last ``window_days``."""
    recent = window(events, window_days)
    items = sorted(_counts(recent.column("item_id")).items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ITEMS]
    return Profile(
        window_days=window_days,
        newest=float(seconds(events).max()) if events.num_rows else 0.0,
        events=recent.num_rows,
        items=dict(items),
        event_types=_counts(recent.column("event_type")),
        snapshot_id=snapshot_id,
        total_events=events.num_rows,
    )
