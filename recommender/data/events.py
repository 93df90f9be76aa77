"""The canonical interaction event: its schema and its validation.

Validation is vectorized (Arrow compute kernels over whole columns, pandas for the forms only
it decides as before): :func:`validate_events` splits raw string columns into
typed, pseudonymized rows ready to store and quarantined rows with their reasons, for a
20M-row file and for the API alike. Its fixed cost (tens of milliseconds a call, whatever the size)
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
from recommender.data.privacy import pseudonymize

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

    def flag(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        """Record ``reason`` for every row where ``mask`` is true (NA counts as false)."""
        hit = mask if isinstance(mask, np.ndarray) else mask.fillna(False).astype(bool).to_numpy()
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


_DECIMAL_FAST = r"^[0-9]{1,15}(\.[0-9]{1,15})?$"
"""Plain decimals, which Arrow's cast and pandas' ``to_numeric`` read as the same float."""


def _number(raw: pd.Series, blanks: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """Parse optional numbers (``blanks``: the missing ones); returns (values, bad-mask). Missing is not bad.
    Plain decimals are cast by Arrow; any other form goes through pandas' ``to_numeric``, for those rows alone."""
    values = np.full(len(raw), np.nan)
    if blanks.all():  # the usual optional column: nothing to parse
        return pd.Series(values, index=raw.index), pd.Series(False, index=raw.index)
    text = pc.utf8_trim_whitespace(_strings(raw))
    plain = _mask(pc.match_substring_regex(text, _DECIMAL_FAST))
    if plain.any():
        values[plain] = pc.cast(text.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    other = ~blanks & ~plain
    if other.any():
        values[other] = pd.to_numeric(pd.Series(text.filter(pa.array(other)).to_pylist()), errors="coerce")
    bad = ~blanks & (np.isnan(values) | ~np.isfinite(np.nan_to_num(values, nan=0.0)))
    return pd.Series(values, index=raw.index), pd.Series(bad, index=raw.index)


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


def validate_events(
    raw: pd.DataFrame, settings: Settings, now: datetime | None = None, pseudonyms: dict[str, str] | None = None
) -> Validated:
    """Validate raw canonical rows (strings) into storable rows and quarantined rows.

    ``raw`` has any subset of :data:`CANONICAL` columns plus ``position`` (1-based
    record number in its source). Every row lands in exactly one of the two halves. ``pseudonyms``
    (raw id -> pseudonym) carries what one ingest's earlier batches computed.

    The checks run as Arrow compute kernels over whole columns; the forms those kernels cannot decide
    exactly as before (non-ASCII numbers and event types, unusual time formats) are decided by the pandas
    code for those rows alone, so the result is the same whichever way a row took.
    """
    now = now or datetime.now(UTC)
    frame = raw.reindex(columns=[*CANONICAL, "position"])
    n = len(frame)
    reasons = Reasons(n)
    flag = reasons.flag
    text = {col: _strings(frame[col]) for col in CANONICAL}
    trimmed = {col: pc.utf8_trim_whitespace(text[col]) for col in CANONICAL}
    missing = {col: _mask(pc.or_kleene(pc.is_null(text[col]), pc.equal(trimmed[col], ""))) for col in CANONICAL}

    for col in REQUIRED:
        flag(missing[col], f"missing_field:{col}")
    for col in TEXT_FIELDS:
        flag(_mask(pc.greater(pc.utf8_length(text[col]), settings.max_field_length)), f"oversized_field:{col}")
        if _has_control_bytes(text[col]):  # a byte below 0x20 is a control character in UTF-8, nothing else
            flag(_mask(pc.match_substring_regex(text[col], _CONTROL)), f"control_characters:{col}")

    tagged = trimmed["recommendation_id"]
    flag(
        ~missing["recommendation_id"] & ~_mask(pc.match_substring_regex(tagged, f"^{RECOMMENDATION_ID}$")),
        "bad_recommendation_id",
    )

    event_type = pc.utf8_lower(trimmed["event_type"])  # what pandas' Arrow-backed strings did before
    flag(
        ~missing["event_type"] & ~_mask(pc.is_in(event_type, pa.array(sorted(settings.event_types)))),
        "unknown_event_type",
    )

    micros, parsed = _timestamps(trimmed["timestamp"], missing["timestamp"])
    flag(~missing["timestamp"] & ~parsed, "bad_timestamp")
    horizon = int((now.timestamp() + settings.max_future_seconds) * 1_000_000)
    flag(parsed & (micros > horizon), "future_timestamp")
    flag(parsed & (micros < int(pd.Timestamp(settings.min_timestamp).timestamp() * 1_000_000)), "timestamp_too_old")

    quantity, bad_q = _number(frame["quantity"], missing["quantity"])
    bad_q |= quantity.notna() & ((quantity % 1 != 0) | (quantity < 1) | (quantity > settings.max_quantity))
    flag(bad_q, "bad_number:quantity")
    price, bad_p = _number(frame["price"], missing["price"])
    bad_p |= price.notna() & ((price < 0) | (price > settings.max_price))
    flag(bad_p, "bad_number:price")

    secret = settings.hmac_secret.get_secret_value()
    cache = {} if pseudonyms is None else pseudonyms
    users = _pseudonymized(trimmed["user_id"], missing["user_id"], secret, cache)
    sessions = _pseudonymized(trimmed["session_id"], missing["session_id"], secret, {})  # rarely seen twice

    is_bad = reasons.bad  # pseudonymized field by field: no raw user or session id reaches the quarantine
    bad_users = users.filter(pa.array(is_bad)).to_pylist()
    bad_rows = (
        frame[is_bad]
        .drop(columns=["position"])
        .assign(user_id=bad_users, session_id=sessions.filter(pa.array(is_bad)).to_pylist())
    )
    bad = pd.DataFrame(
        {
            "position": frame.loc[is_bad, "position"].astype("Int64").to_numpy(),
            "reason": reasons.text(),
            "user_id": np.array(bad_users, dtype=object),
            "raw": raw_json(bad_rows),
        }
    )
    keep = pa.array(~is_bad)
    good = _storable(
        {col: trimmed[col].filter(keep) for col in ("event_id", "item_id", "recommendation_id")},
        {col: pa.array(missing[col][~is_bad]) for col in ("event_id", "recommendation_id")},
        users.filter(keep),
        sessions.filter(keep),
        event_type.filter(keep),
        micros[~is_bad],
        quantity[~is_bad],
        price[~is_bad],
    )
    return Validated(good=good, bad=bad)


def _strings(series: pd.Series) -> pa.Array:
    """A raw column as one Arrow string array (null where missing)."""
    if not isinstance(series.dtype, pd.StringDtype) and not (
        series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    ):
        series = series.astype("string")  # numbers, or a mix: as text, as before
    found = pa.array(series, from_pandas=True)
    if isinstance(found, pa.ChunkedArray):
        found = found.combine_chunks()
    return found.cast(pa.large_string()) if found.type != pa.large_string() else found


def _has_control_bytes(values: pa.Array) -> bool:
    """Whether any value holds a byte of U+0000-U+001F or U+007F (one look at the column's data buffer)."""
    offsets, data = values.buffers()[1:3]
    if data is None or not len(values):
        return False
    bounds = np.frombuffer(offsets, dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    raw = np.frombuffer(data, dtype=np.uint8)[bounds[0] : bounds[-1]]
    return bool(((raw < 0x20) | (raw == 0x7F)).any())


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean Arrow result as a numpy mask (null: false)."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


_ISO_FAST = (
    r"^(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?"
    r"(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$"
)
"""ISO-8601 times with a zone that Arrow's parser reads exactly as pandas does (years 1900-2099)."""
_SECONDS_FAST = r"^[0-9]{1,10}$"
"""Whole unix seconds (below 1e11, the validator's bound), read as integers by Arrow and by pandas alike."""


def _timestamps(values: pa.Array, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each time as unix microseconds, and whether it parsed; the forms outside the fast ones through
    :func:`parse_timestamps`."""
    micros = np.zeros(len(values), dtype=np.int64)
    parsed = np.zeros(len(values), dtype=bool)
    iso, seconds = (
        _mask(pc.match_substring_regex(values, _ISO_FAST)),
        _mask(pc.match_substring_regex(values, _SECONDS_FAST)),
    )
    for rows, read in ((iso, _iso_micros), (seconds, _second_micros)):
        if rows.any():
            try:
                micros[rows] = read(values.filter(pa.array(rows)))
                parsed[rows] = True
            except (pa.ArrowInvalid, ValueError):  # a date that does not exist among them: the slow path decides
                pass
    slow = ~missing & ~parsed  # the other forms, and fast ones among which a date does not exist
    if slow.any():
        found = parse_timestamps(pd.Series(values.filter(pa.array(slow)).to_pylist(), dtype="object"))
        ok = found.notna().to_numpy()
        at = np.flatnonzero(slow)
        micros[at[ok]] = found[ok].astype("int64").to_numpy()
        parsed[at[ok]] = True
    return micros, parsed


def _iso_micros(values: pa.Array) -> np.ndarray:
    return pc.cast(values, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)


def _second_micros(values: pa.Array) -> np.ndarray:
    return pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False) * 1_000_000


def _pseudonymized(values: pa.Array, missing: np.ndarray, secret: str, cache: dict[str, str]) -> pa.Array:
    """The pseudonym of each present (stripped) id, null where missing: each distinct id hashed once, and once
    per ingest with ``cache``."""
    if missing.all():
        return pa.nulls(len(values), pa.large_string())
    encoded = pc.dictionary_encode(pc.if_else(pa.array(~missing), values, pa.scalar(None, pa.large_string())))
    if len(cache) > CACHE_LIMIT:
        cache.clear()
    hashed = []
    for raw in encoded.dictionary.to_pylist():
        found = cache.get(raw)
        if found is None:
            found = cache[raw] = pseudonymize(raw, secret)
        hashed.append(found)
    return pc.take(pa.array(hashed, pa.large_string()), encoded.indices)


CACHE_LIMIT = 300_000
"""User pseudonyms one ingest keeps between its batches (about 60 MB at the limit, then it starts again)."""


def _storable(
    text: dict[str, pa.Array],
    missing: dict[str, pa.Array],
    users: pa.Array,
    sessions: pa.Array,
    event_type: pa.Array,
    micros: np.ndarray,
    quantity: pd.Series,
    price: pd.Series,
) -> pa.Table:
    """The good rows in :data:`EVENT_SCHEMA` (the given ``event_id``, or the content hash where there is none)."""
    n = len(users)
    columns = {
        "user_id": users,
        "item_id": text["item_id"],
        "event_type": event_type,
        "timestamp": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "session_id": sessions,
        "quantity": pa.array(quantity.astype("Int32"), pa.int32(), from_pandas=True),
        "price": pa.array(price.to_numpy(), pa.float64(), from_pandas=True),
        "recommendation_id": pc.if_else(
            missing["recommendation_id"], pa.scalar(None, pa.large_string()), text["recommendation_id"]
        ),
    }
    event_id = pc.if_else(missing["event_id"], pa.scalar(None, pa.large_string()), text["event_id"])
    lacking = np.flatnonzero(_mask(missing["event_id"]))
    if len(lacking):
        ids = event_id.to_pylist()
        rows = (
            pa.table(columns).take(pa.array(lacking)).to_pandas(types_mapper={pa.large_string(): pd.StringDtype()}.get)
        )
        rows["user_id"] = rows["user_id"].astype(object).where(rows["user_id"].notna(), None)
        rows["session_id"] = rows["session_id"].astype(object).where(rows["session_id"].notna(), None)
        rows["quantity"] = rows["quantity"].astype("Int32")
        for at, content in zip(lacking.tolist(), content_ids(rows), strict=True):
            ids[at] = content
        event_id = pa.array(ids, pa.large_string())
    nulls = pa.nulls(n, pa.large_string())
    return pa.table({"event_id": event_id, **columns, "source": nulls, "ingest_id": nulls}, schema=EVENT_SCHEMA)


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
