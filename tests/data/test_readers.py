"""Format readers on small fixture files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender.data.readers import AMAZON_EPOCH, FormatError, detect_format, read_events
from tests.conftest import write


def frames(path: Path, fmt: str = "auto", batch_rows: int = 1_000_000) -> tuple[pd.DataFrame, list]:
    batches = list(read_events(path, fmt, batch_rows))
    return pd.concat([b.frame for b in batches], ignore_index=True), [m for b in batches for m in b.malformed]


def test_canonical_csv_keeps_strings_and_positions(tmp_path: Path) -> None:
    p = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp,price,extra\nu1,007,view,1700000000,1.50,x\n"
        "u2,i2,purchase,2024-01-01T00:00:00Z,,y\n",
    )
    frame, malformed = frames(p)
    assert list(frame["item_id"]) == ["007", "i2"]  # leading zeros survive: everything is read as text
    assert list(frame["position"]) == [1, 2]
    assert "extra" not in frame.columns
    assert malformed == []


def test_malformed_csv_rows_are_returned_not_raised(tmp_path: Path) -> None:
    p = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp\nu1,i1,view,1700000000\nalice,i2,view,1700000000,too,many\n",
    )
    frame, malformed = frames(p)
    assert len(frame) == 1
    assert len(malformed) == 1 and malformed[0].user == "alice" and "too,many" in malformed[0].text


def test_csv_without_required_columns_is_a_format_error(tmp_path: Path) -> None:
    p = write(tmp_path / "e.csv", "who,what\na,b\n")
    with pytest.raises(FormatError, match="header lacks user_id"):
        frames(p)


def test_binary_garbage_is_a_format_error(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_bytes(b"\xff\xfe\x00\x01garbage\x00\x9c")
    with pytest.raises(FormatError):
        frames(p)


def test_csv_streams_in_batches(tmp_path: Path) -> None:
    rows = "".join(f"u{i},i{i},view,{1700000000 + i}\n" for i in range(50))
    p = write(tmp_path / "e.csv", "user_id,item_id,event_type,timestamp\n" + rows)
    batches = list(read_events(p, "csv", batch_rows=10))
    assert sum(len(b.frame) for b in batches) == 50
    positions = pd.concat([b.frame["position"] for b in batches])
    assert list(positions) == list(range(1, 51))


def test_parquet_reader_casts_to_text(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": ["u1"],
            "item_id": [42],
            "event_type": ["view"],
            "timestamp": pa.array([pd.Timestamp("2024-01-01T00:00:00Z")], pa.timestamp("us", tz="UTC")),
            "price": [1.5],
        }
    )
    pq.write_table(table, tmp_path / "e.parquet")
    frame, _ = frames(tmp_path / "e.parquet")
    assert frame.loc[0, "item_id"] == "42"
    assert pd.Timestamp(frame.loc[0, "timestamp"]) == pd.Timestamp("2024-01-01T00:00:00Z")


def test_parquet_missing_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"user_id": ["u"]}), tmp_path / "e.parquet")
    with pytest.raises(FormatError, match="missing"):
        frames(tmp_path / "e.parquet")


def test_amazon_5core_keeps_order_with_increasing_times(tmp_path: Path) -> None:
    p = write(tmp_path / "Beauty.txt", "1 10 11 12\n2 11\nlonely\n")
    assert detect_format(p) == "amazon-5core"
    frame, malformed = frames(p)
    assert list(frame["user_id"]) == ["1", "1", "1", "2"]
    assert list(frame["item_id"]) == ["10", "11", "12", "11"]
    times = frame["timestamp"].astype(float)
    assert times.iloc[0] == AMAZON_EPOCH.timestamp() and times.iloc[0] < times.iloc[1] < times.iloc[2]
    assert set(frame["event_type"]) == {"purchase"}
    assert [m.line for m in malformed] == [3]


def test_session_rec_tsv(tmp_path: Path) -> None:
    p = write(tmp_path / "clicks.txt", "SessionId\tItemId\tTime\n1\t214\t1396850000.5\n1\t215\t1396850100.0\n")
    assert detect_format(p) == "session-rec"
    frame, _ = frames(p)
    assert list(frame["user_id"]) == ["1", "1"] and list(frame["session_id"]) == ["1", "1"]
    assert list(frame["timestamp"]) == ["1396850000.5", "1396850100.0"]
    assert set(frame["event_type"]) == {"view"}


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    p = write(tmp_path / "weird.dat", "hello world\n")
    with pytest.raises(FormatError, match="pass --format"):
        frames(p)
    with pytest.raises(FormatError, match="no such file"):
        frames(tmp_path / "absent.csv")
    with pytest.raises(FormatError, match="unknown format"):
        frames(p, "xml")
