"""The canonical interaction event: its schema and its validation.

Validation is vectorized (pandas): :func:`validate_events` splits raw string columns into
typed, pseudonymized rows ready to store and quarantined rows with their reasons, for a
20M-row file and for the API alike. Its fixed cost (about 40 ms a call, whatever the size)
is too much for an API request of one event, so the API first tries :func:`plain_rows`: the
same rows, built in plain Python, for events that are plainly valid in their most common
forms; anything else (a bad value, an unusual form) goes through :func:`validate_events`,
which decides and says why. tests/data/test_plain_events.py checks on generated events that
the two agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recommender.config import Settings
from recommender.data.privacy import pseudonymize, pseudonymize_many

REQUIRED = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL = ("event_id", "session_id", "quantity", "price", "recommendation_id")
CANONICAL = REQUIRED + OPTIONAL
TEXT_FIELDS = ("user_id", "item_id", "event_type", "event_id", "session_id", "recommendation_id")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.large_string(), nullable=False),
        pa.field("user_id", pa.large_string(), nullable=False),
        pa.field("item_id", pa.large_string(), nullable=False),
        pa.field("event_type", pa.large_string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("session_id", pa.large_string()),
        pa.field("quantity", pa.int32()),
        pa.field("price", pa.float64()),
        pa.field("recommendation_id", pa.large_string()),
        pa.field("source", pa.large_string()),
        pa.field("ingest_id", pa.large_string()),
    ]
)
"""What the events table stores: ``user_id`` and ``session_id`` are pseudonyms."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("quarantine_id", pa.large_string(), nullable=False),
        pa.field("kind", pa.large_string(), nullable=False),
        pa.field("reason", pa.large_string(), nullable=False),
        pa.field("position", pa.int64()),
        pa.field("user_id", pa.large_string()),
        pa.field("raw", pa.large_string()),
        pa.field("source", pa.large_string()),
        pa.field("ingest_id", pa.large_string()),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""Rejected rows, kept so nothing is lost. ``raw`` never holds a raw user id."""

_NUMERIC = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_CONTROL = r"[\x00-\x1f\x7f]"
RECOMMENDATION_ID = r"[\x21-\x7e]+"
"""A ``recommendation_id`` is printable ASCII without spaces, as the API issues them (any other is quarantined)."""


@dataclass(frozen=True)
class Validated:
    """The two halves of a validated batch."""

    good: pa.Table
    """Rows ready to store, in :data:`EVENT_SCHEMA` (without ``source``/``ingest_id`` set)."""
    bad: pd.DataFrame
    """Rows to quarantine: ``position``, ``reason``, ``user_id`` (pseudonym), ``raw``."""


class Reasons:
    """Accumulates quarantine reasons per row (``a;b`` when several checks fail)."""

    def __init__(self, n: int) -> None:
        self._text = np.full(n, "", dtype=object)

    def flag(self, mask: pd.Series, reason: str) -> None:
        """Record ``reason`` for every row where ``mask`` is true (NA counts as false)."""
        hit = mask.fillna(False).astype(bool).to_numpy()
        self._text[hit] = self._text[hit] + reason + ";"

    @property
    def bad(self) -> np.ndarray:
        """Boolean mask of rows with at least one reason."""
        return self._text != ""

    def text(self) -> np.ndarray:
        """The reasons of the bad rows, ``;``-separated."""
        return np.array([t.rstrip(";") for t in self._text[self.bad]], dtype=object)


def raw_json(frame: pd.DataFrame) -> list[str]:
    """Each row as a JSON object (missing values as null), for the quarantine's ``raw``."""
    records = frame.astype("object").where(frame.notna(), None).to_dict(orient="records")
    return [json.dumps(r, ensure_ascii=False, default=str) for r in records]


def blank(series: pd.Series) -> pd.Series:
    """True where a raw value is missing, empty or only whitespace."""
    return series.isna() | (series.astype("string").str.strip() == "")


def parse_timestamps(raw: pd.Series) -> pd.Series:
    """Parse ISO-8601 strings or unix seconds into UTC timestamps (NaT when unparsable)."""
    text = raw.astype("string").str.strip()
    numeric = text.str.fullmatch(_NUMERIC).fillna(False).astype(bool)
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if numeric.any():
        seconds = pd.to_numeric(text[numeric], errors="coerce")
        seconds = seconds.where(seconds.abs() < 1e11)  # beyond year 5000: not seconds
        out[numeric] = pd.to_datetime(seconds, unit="s", utc=True, errors="coerce").astype("datetime64[us, UTC]")
    iso = ~numeric & text.notna()
    if iso.any():
        parsed = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
        out[iso] = parsed.astype("datetime64[us, UTC]")
    return out


def _number(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse optional numbers; returns (values, bad-mask). Missing is not bad."""
    missing = blank(raw)
    values = pd.to_numeric(raw.astype("string").str.strip().where(~missing), errors="coerce")
    bad = ~missing & (values.isna() | ~np.isfinite(values.astype("float64").fillna(0.0)))
    return values.astype("float64"), bad


def _content_text(col: pd.Series) -> pd.Series:
    """A column as the text content ids hash. Times are written one by one as ``str(datetime)`` does: pandas'
    own text of a time column takes the precision its finest value needs, so one event's id would change
    with the other events of its batch."""
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        return col.astype("string")
    stamps = pc.replace_substring_regex(pc.strftime(pa.array(col), format="%Y-%m-%d %H:%M:%S"), r"\.0+$", "")
    return pd.Series(
        pc.binary_join_element_wise(stamps, "+00:00", "").to_numpy(zero_copy_only=False),
        index=col.index,
        dtype="string",
    )


def content_ids(frame: pd.DataFrame) -> np.ndarray:
    """Stable content hash (blake2b-128) per row, used as ``event_id`` when none is given."""
    cols = [_content_text(frame[c]).fillna("") for c in frame.columns]  # a missing value joins as ""
    joined = cols[0].str.cat(pd.concat(cols[1:], axis=1), sep="\x1f")
    return np.array([hashlib.blake2b(s.encode(), digest_size=16).hexdigest() for s in joined], dtype=object)


def validate_events(raw: pd.DataFrame, settings: Settings, now: datetime | None = None) -> Validated:
    """Validate raw canonical rows (strings) into storable rows and quarantined rows.

    ``raw`` has any subset of :data:`CANONICAL` columns plus ``position`` (1-based
    record number in its source). Every row lands in exactly one of the two halves.
    """
    now = now or datetime.now(UTC)
    frame = raw.reindex(columns=[*CANONICAL, "position"])
    n = len(frame)
    reasons = Reasons(n)
    flag = reasons.flag

    for col in REQUIRED:
        flag(blank(frame[col]), f"missing_field:{col}")
    for col in TEXT_FIELDS:
        text = frame[col].astype("string")
        flag(text.str.len() > settings.max_field_length, f"oversized_field:{col}")
        flag(text.str.contains(_CONTROL, regex=True), f"control_characters:{col}")

    tagged = frame["recommendation_id"].astype("string").str.strip()
    flag(
        ~blank(frame["recommendation_id"]) & ~tagged.str.fullmatch(RECOMMENDATION_ID).fillna(False),
        "bad_recommendation_id",
    )

    event_type = frame["event_type"].astype("string").str.strip().str.lower()
    flag(~blank(frame["event_type"]) & ~event_type.isin(settings.event_types), "unknown_event_type")

    ts = parse_timestamps(frame["timestamp"])
    has_ts = ~blank(frame["timestamp"])
    flag(has_ts & ts.isna(), "bad_timestamp")
    horizon = pd.Timestamp(now) + pd.Timedelta(seconds=settings.max_future_seconds)
    flag(ts.notna() & (ts > horizon), "future_timestamp")
    flag(ts.notna() & (ts < pd.Timestamp(settings.min_timestamp)), "timestamp_too_old")

    quantity, bad_q = _number(frame["quantity"])
    bad_q |= quantity.notna() & ((quantity % 1 != 0) | (quantity < 1) | (quantity > settings.max_quantity))
    flag(bad_q, "bad_number:quantity")
    price, bad_p = _number(frame["price"])
    bad_p |= price.notna() & ((price < 0) | (price > settings.max_price))
    flag(bad_p, "bad_number:price")

    secret = settings.hmac_secret.get_secret_value()
    users, sessions = _pseudonyms(frame["user_id"], secret), _pseudonyms(frame["session_id"], secret)

    is_bad = reasons.bad  # pseudonymized field by field: no raw user or session id reaches the quarantine
    bad_rows = frame[is_bad].drop(columns=["position"]).assign(user_id=users[is_bad], session_id=sessions[is_bad])
    bad = pd.DataFrame(
        {
            "position": frame.loc[is_bad, "position"].astype("Int64").to_numpy(),
            "reason": reasons.text(),
            "user_id": users[is_bad].to_numpy(),
            "raw": raw_json(bad_rows),
        }
    )
    good = _storable(frame[~is_bad], users[~is_bad], sessions[~is_bad], event_type, ts, quantity, price)
    return Validated(good=good, bad=bad)


def _pseudonyms(raw: pd.Series, secret: str) -> pd.Series:
    """The pseudonym of each non-blank id (stripped), None where blank."""
    present = ~blank(raw)
    out = pd.Series([None] * len(raw), index=raw.index, dtype="object")
    if present.any():
        out[present] = pseudonymize_many(raw[present].astype("string").str.strip(), secret)
    return out


def _storable(
    frame: pd.DataFrame,
    users: pd.Series,
    sessions: pd.Series,
    event_type: pd.Series,
    ts: pd.Series,
    quantity: pd.Series,
    price: pd.Series,
) -> pa.Table:
    idx = frame.index
    rec_id = frame["recommendation_id"].astype("string").str.strip()
    clean = pd.DataFrame(
        {
            "user_id": users,
            "item_id": frame["item_id"].astype("string").str.strip(),
            "event_type": event_type[idx],
            "timestamp": ts[idx],
            "session_id": sessions,
            "quantity": quantity[idx].astype("Int32"),
            "price": price[idx],
            "recommendation_id": rec_id.where(~blank(rec_id)),
        },
        index=idx,
    )
    given = frame["event_id"].astype("string").str.strip()
    given_ok = ~blank(given)
    event_id = pd.Series([None] * len(idx), index=idx, dtype="object")
    event_id[given_ok] = given[given_ok].to_numpy(dtype=object)
    if (~given_ok).any():
        event_id[~given_ok] = content_ids(clean[~given_ok])
    clean.insert(0, "event_id", event_id)
    clean["source"] = None
    clean["ingest_id"] = None
    return pa.Table.from_pandas(clean, schema=EVENT_SCHEMA, preserve_index=False)


_PLAIN_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)|\d{9,10}(\.0)?")
_PLAIN_QUANTITY = re.compile(r"\d{1,9}")
_PLAIN_PRICE = re.compile(r"\d{1,9}(\.\d{1,6})?")
_CONTROL_RE = re.compile(_CONTROL)
_RECOMMENDATION_ID_RE = re.compile(RECOMMENDATION_ID)


def as_text(events: Sequence[Mapping[str, Any]]) -> list[dict[str, str | None]]:
    """API events (JSON values) as the raw strings validation takes, one per canonical field."""
    return [{k: None if e.get(k) is None else str(e.get(k)) for k in CANONICAL} for e in events]


def events_frame(raw: Sequence[Mapping[str, str | None]]) -> pd.DataFrame:
    """Raw events (see :func:`as_text`) as the frame :func:`validate_events` takes (``position`` from 0)."""
    return pd.DataFrame(list(raw), columns=list(CANONICAL)).assign(position=range(len(raw)))


def plain_rows(
    events: Sequence[Mapping[str, str | None]], settings: Settings, now: datetime | None = None
) -> list[dict[str, Any]] | None:
    """The storable rows of ``events`` (raw strings, as :func:`validate_events` takes them) when every one is
    plainly valid, exactly as :func:`validate_events` would store them; None when any is not (then ask it).

    Plain means: no padding but spaces, ASCII event types, ISO-8601 times to the microsecond with a zone
    (what JavaScript's ``toISOString`` writes) or whole unix seconds (``.0`` allowed: JSON numbers arrive
    as floats), whole quantities and decimal prices.
    """
    now = now or datetime.now(UTC)
    bounds = (pd.Timestamp(settings.min_timestamp).timestamp(), now.timestamp() + settings.max_future_seconds)
    rows = []
    for event in events:
        text = _plain_text(event, settings)
        row = None if text is None else _plain_row(text, settings, bounds)
        if row is None:
            return None
        rows.append(row)
    return rows


def _plain_text(event: Mapping[str, str | None], settings: Settings) -> dict[str, str | None] | None:
    """Each field stripped (None when blank); None when a required one is blank or a text is not plain."""
    text: dict[str, str | None] = {}
    for col in CANONICAL:
        raw = event.get(col)
        if raw is not None and col in TEXT_FIELDS and (len(raw) > settings.max_field_length or _CONTROL_RE.search(raw)):
            return None  # before the blank check: a tab alone is a control character to the validator
        if raw is None or not raw.strip():
            if col in REQUIRED:
                return None
            text[col] = None
            continue
        value = raw.strip(" ")
        if value != raw.strip() or (col == "recommendation_id" and not _RECOMMENDATION_ID_RE.fullmatch(value)):
            return None
        text[col] = value
    return text


def _plain_row(text: dict[str, str | None], settings: Settings, bounds: tuple[float, float]) -> dict[str, Any] | None:
    """The storable row of one plain event's stripped fields, or None when a value is not plainly valid."""
    kind, stamp = str(text["event_type"]).lower(), str(text["timestamp"])
    quantity, price = text["quantity"], text["price"]
    if not kind.isascii() or kind not in settings.event_types or not _PLAIN_TS.fullmatch(stamp):
        return None
    try:  # a well-shaped date that does not exist (month 13, February 30, hour 24) is the validator's to refuse
        at = datetime.fromtimestamp(int(float(stamp)), UTC) if "-" not in stamp else datetime.fromisoformat(stamp)
        at = at.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if not bounds[0] <= at.timestamp() <= bounds[1]:
        return None
    if quantity is not None and not (
        _PLAIN_QUANTITY.fullmatch(quantity) and 1 <= int(quantity) <= settings.max_quantity
    ):
        return None
    if price is not None and not (_PLAIN_PRICE.fullmatch(price) and float(price) <= settings.max_price):
        return None
    secret = settings.hmac_secret.get_secret_value()
    row: dict[str, Any] = {
        "user_id": pseudonymize(str(text["user_id"]), secret),
        "item_id": text["item_id"],
        "event_type": kind,
        "timestamp": at,
        "session_id": None if text["session_id"] is None else pseudonymize(text["session_id"], secret),
        "quantity": None if quantity is None else int(quantity),
        "price": None if price is None else float(price),
        "recommendation_id": text["recommendation_id"],
    }
    content = "\x1f".join("" if v is None else str(v) for v in row.values())  # as content_ids joins them (NA: "")
    return {"event_id": text["event_id"] or hashlib.blake2b(content.encode(), digest_size=16).hexdigest(), **row}
