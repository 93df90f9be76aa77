"""The API's fast path for plain events stores exactly what the vectorized validator stores, and never
accepts what the validator would refuse: checked on generated events, plain and not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from recommender.config import Settings
from recommender.data.events import as_text, events_frame, plain_rows, validate_events

SETTINGS = Settings(hmac_secret="plain-test-secret")
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

ids = st.text(alphabet="abcXYZ019-_:.é", min_size=1, max_size=12)
issued = st.text(alphabet="abcXYZ019-_:.", min_size=1, max_size=12)  # a recommendation id is printable ASCII
padded = st.builds(lambda s, left, right: " " * left + s + " " * right, ids, st.integers(0, 2), st.integers(0, 2))
when = st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2026, 12, 4, 9), timezones=st.just(UTC))
iso = st.builds(
    lambda t, frac, zone: (
        (t + zone).strftime("%Y-%m-%dT%H:%M:%S")
        + (f".{t.microsecond:06d}"[: frac + 1] if frac else "")
        + ("Z" if not zone else f"{'+' if zone >= timedelta(0) else '-'}{abs(zone) // timedelta(hours=1):02d}:00")
    ),
    when,
    st.integers(0, 6),
    st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(hours=-5)]),
)
plain_time = st.one_of(
    iso, when.map(lambda t: str(int(t.timestamp()))), when.map(lambda t: str(float(int(t.timestamp()))))
)
odd_time = st.sampled_from(
    [
        "2026-11-26",
        "2026-11-26 10:00:00",
        "1795687200.5",
        "not a time",
        "2999-01-01T00:00:00Z",
        "1990-01-01T00:00:00Z",
        "",
        "  ",
    ]
)
plain_number = st.one_of(st.none(), st.integers(1, 10_000).map(str))
plain_price = st.one_of(st.none(), st.decimals(0, 1_000_000, places=2, allow_nan=False).map(str), st.just("19.9"))
odd_number = st.sampled_from(["0", "-1", "1.5", "1e3", "abc", "99999999", " 7 ", "nan", "inf", "+3"])


def event(user: Any, item: Any, kind: Any, ts: Any, quantity: Any, price: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"user_id": user, "item_id": item, "event_type": kind, "timestamp": ts, "quantity": quantity, "price": price},
        optional={"event_id": ids, "session_id": ids, "recommendation_id": issued},
    )


plain = event(
    ids, ids, st.sampled_from(["view", "purchase", "VIEW", "Add_To_Cart"]), plain_time, plain_number, plain_price
)
anything = event(
    st.one_of(padded, st.just(""), st.just("a\x00b"), st.just("x" * 300)),
    st.one_of(padded, st.just("\t")),
    st.sampled_from(["view", " purchase ", "unknown", "VİEW", ""]),
    st.one_of(plain_time, odd_time),
    st.one_of(plain_number, odd_number),
    st.one_of(plain_price, odd_number),
)


def _slow(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    checked = validate_events(events_frame(as_text(events)), SETTINGS, NOW)
    return checked.good.drop_columns(["source", "ingest_id"]).to_pylist(), len(checked.bad)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain, min_size=1, max_size=12))
def test_plain_events_take_the_fast_path_and_store_the_same_rows(events: list[dict[str, Any]]) -> None:
    fast = plain_rows(as_text(events), SETTINGS, NOW)
    good, bad = _slow(events)
    assert bad == 0
    assert fast == good, repr(events)


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(plain, anything), min_size=1, max_size=3))
def test_the_fast_path_never_accepts_what_the_validator_refuses(events: list[dict[str, Any]]) -> None:
    fast = plain_rows(as_text(events), SETTINGS, NOW)
    good, bad = _slow(events)
    if fast is not None:
        assert bad == 0
        assert fast == good


def test_a_refused_event_falls_back_to_the_validator_with_its_reason() -> None:
    events = [{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2026-12-03T09:00:00Z"}]
    assert plain_rows(as_text(events), SETTINGS, NOW) is not None
    events[0]["event_type"] = "teleport"
    assert plain_rows(as_text(events), SETTINGS, NOW) is None
    checked = validate_events(events_frame(as_text(events)), SETTINGS, NOW)
    assert list(checked.bad["reason"]) == ["unknown_event_type"]


def test_an_events_content_id_does_not_depend_on_the_other_events_of_its_batch() -> None:
    """pandas writes a time column at the precision its finest value needs: the id of an event at a whole
    second changed when a neighbour had milliseconds, so a retried event could be stored twice."""
    alone = [{"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": "2026-12-03T09:00:00Z"}]
    neighbour = {"user_id": "u2", "item_id": "i2", "event_type": "view", "timestamp": "2026-12-03T09:00:00.250Z"}
    first = validate_events(events_frame(as_text(alone)), SETTINGS, NOW).good.column("event_id")[0]
    batch = validate_events(events_frame(as_text([*alone, neighbour])), SETTINGS, NOW).good.column("event_id")
    assert batch[0] == first
