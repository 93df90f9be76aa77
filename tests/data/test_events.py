"""Schema, validation and every quarantine reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from recommender.config import Settings
from recommender.data.events import EVENT_SCHEMA, parse_timestamps, validate_events
from recommender.data.privacy import pseudonymize

NOW = datetime(2025, 6, 1, tzinfo=UTC)
GOOD = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2025-01-01T00:00:00Z"}


def check(settings: Settings, **changes: object) -> tuple[int, list[str]]:
    row = {**GOOD, **changes}
    frame = pd.DataFrame([{k: v for k, v in row.items() if v is not ...}]).assign(position=1)
    result = validate_events(frame, settings, NOW)
    return result.good.num_rows, list(result.bad["reason"])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"user_id": None}, "missing_field:user_id"),
        ({"user_id": "   "}, "missing_field:user_id"),
        ({"item_id": ""}, "missing_field:item_id"),
        ({"event_type": None}, "missing_field:event_type"),
        ({"timestamp": None}, "missing_field:timestamp"),
        ({"event_type": "click"}, "unknown_event_type"),
        ({"timestamp": "yesterday"}, "bad_timestamp"),
        ({"timestamp": "2025-13-40T00:00:00Z"}, "bad_timestamp"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "future_timestamp"),
        ({"timestamp": str(NOW.timestamp() * 1000)}, "bad_timestamp"),  # milliseconds, not seconds
        ({"timestamp": "1970-01-02T00:00:00Z"}, "timestamp_too_old"),
        ({"quantity": "two"}, "bad_number:quantity"),
        ({"quantity": "1.5"}, "bad_number:quantity"),
        ({"quantity": "0"}, "bad_number:quantity"),
        ({"quantity": "99999999"}, "bad_number:quantity"),
        ({"price": "-3"}, "bad_number:price"),
        ({"price": "nan"}, "bad_number:price"),
        ({"price": "inf"}, "bad_number:price"),
        ({"item_id": "x" * 300}, "oversized_field:item_id"),
        ({"event_id": "e" * 300}, "oversized_field:event_id"),
        ({"item_id": "bad\x00id"}, "control_characters:item_id"),
    ],
)
def test_each_quarantine_reason(settings: Settings, changes: dict[str, object], reason: str) -> None:
    good, reasons = check(settings, **changes)
    assert good == 0
    assert reasons == [reason]


def test_several_reasons_are_all_kept(settings: Settings) -> None:
    _, reasons = check(settings, event_type="click", price="abc")
    assert reasons == ["unknown_event_type;bad_number:price"]


def test_good_row_is_typed_and_pseudonymized(settings: Settings) -> None:
    frame = pd.DataFrame(
        [{**GOOD, "event_type": " Purchase ", "quantity": "2", "price": "9.50", "session_id": "s1", "position": 1}]
    )
    good = validate_events(frame, settings, NOW).good
    assert good.schema == EVENT_SCHEMA
    row = good.to_pylist()[0]
    secret = settings.hmac_secret.get_secret_value()
    assert row["user_id"] == pseudonymize("u1", secret) != "u1"
    assert row["session_id"] == pseudonymize("s1", secret)
    assert row["event_type"] == "purchase"
    assert (row["quantity"], row["price"]) == (2, 9.5)
    assert row["timestamp"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert len(row["event_id"]) == 32  # content hash when no event_id is given


def test_content_id_is_stable_and_content_sensitive(settings: Settings) -> None:
    frame = pd.DataFrame([GOOD, GOOD, {**GOOD, "item_id": "i2"}]).assign(position=[1, 2, 3])
    ids = validate_events(frame, settings, NOW).good.column("event_id").to_pylist()
    assert ids[0] == ids[1] != ids[2]
    again = validate_events(frame, settings, NOW).good.column("event_id").to_pylist()
    assert again == ids


def test_given_event_id_is_kept(settings: Settings) -> None:
    frame = pd.DataFrame([{**GOOD, "event_id": "evt-7", "position": 1}])
    assert validate_events(frame, settings, NOW).good.column("event_id").to_pylist() == ["evt-7"]


def test_raw_user_id_never_in_quarantine(settings: Settings) -> None:
    frame = pd.DataFrame([{**GOOD, "user_id": "alice@example.com", "event_type": "click", "position": 1}])
    bad = validate_events(frame, settings, NOW).bad
    assert "alice@example.com" not in bad.to_string()
    assert bad["user_id"].iloc[0] == pseudonymize("alice@example.com", "test-secret")


def test_configured_event_types(tmp_path) -> None:  # type: ignore[no-untyped-def]
    custom = Settings(home=tmp_path, event_weights={"view": 1, "wishlist": 3})
    frame = pd.DataFrame([{**GOOD, "event_type": t, "position": i} for i, t in enumerate(["wishlist", "purchase"])])
    result = validate_events(frame, custom, NOW)
    assert result.good.column("event_type").to_pylist() == ["wishlist"]
    assert list(result.bad["reason"]) == ["unknown_event_type"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01T12:00:00Z", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01T13:00:00+01:00", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("2024-03-01 12:00:00", datetime(2024, 3, 1, 12, tzinfo=UTC)),  # naive = UTC
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        ("1709294400", datetime(2024, 3, 1, 12, tzinfo=UTC)),
        ("1709294400.5", datetime(2024, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)),
        (" 1709294400 ", datetime(2024, 3, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_timestamps(raw: str, expected: datetime) -> None:
    assert parse_timestamps(pd.Series([raw])).iloc[0] == pd.Timestamp(expected)


def test_unparsable_timestamps_are_nat() -> None:
    assert parse_timestamps(pd.Series(["nope", "", None, "12:00"])).isna().all()
