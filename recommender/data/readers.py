"""Readers that turn shop files into raw canonical batches (all values as strings).

Each reader yields :class:`RawBatch` es of at most ``batch_rows`` records so a large
file streams; rows the parser itself cannot split are returned as malformed rows
(to be quarantined), while a file that cannot be read at all raises
:class:`FormatError` before anything is stored.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recommender.data.events import CANONICAL, REQUIRED

Format = Literal["auto", "csv", "parquet", "amazon-5core", "session-rec"]
FORMATS: tuple[str, ...] = ("auto", "csv", "parquet", "amazon-5core", "session-rec")

AMAZON_EPOCH = datetime(2014, 1, 1, tzinfo=UTC)
"""Amazon 5-core files carry order, not time: item k of a user is placed k days after this."""
AMAZON_STEP_SECONDS = 86_400


class FormatError(ValueError):
    """The file as a whole cannot be read in the given format."""


@dataclass(frozen=True)
class Malformed:
    """A row the parser could not split: its line, its text, the raw user id where the header puts it (if
    any), and its field count against the expected one. Only ingest's quarantine sees it: the text and the
    raw id are never stored (see ``recommender.data.ingest._malformed_frame``)."""

    line: int | None
    text: str
    user: str | None
    fields: int | None = None
    expected: int | None = None


@dataclass
class RawBatch:
    """Raw canonical rows (strings) plus rows the parser could not split."""

    frame: pd.DataFrame
    malformed: list[Malformed] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Records read in this batch, malformed ones included."""
        return len(self.frame) + len(self.malformed)


def detect_format(path: Path) -> str:
    """Guess a file's format from its name and first line."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "csv"
    try:
        with path.open("r", encoding="utf-8") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read ({exc}); pass --format") from exc
    if first.split("\t")[:2] == ["SessionId", "ItemId"]:
        return "session-rec"
    tokens = first.split()
    if len(tokens) >= 2 and all(t.isdigit() for t in tokens):
        return "amazon-5core"
    raise FormatError(f"{path}: cannot tell the format from its name or first line; pass --format")


BATCH_ROWS = 250_000
"""Rows validated at a time (two batches are in flight: one validated while the other is written), so this
bounds ingest's memory."""


def read_events(
    path: Path,
    fmt: str = "auto",
    batch_rows: int = BATCH_ROWS,
    *,
    event_type: str | None = None,
) -> Iterator[RawBatch]:
    """Stream a file as raw canonical batches; ``event_type`` overrides the format's default."""
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers: dict[str, Callable[[], Iterator[RawBatch]]] = {
        "csv": lambda: _read_csv(path, batch_rows),
        "parquet": lambda: _read_parquet(path, batch_rows),
        "amazon-5core": lambda: _read_amazon(path, batch_rows, event_type or "purchase"),
        "session-rec": lambda: _read_session_rec(path, batch_rows, event_type or "view"),
    }
    if fmt not in readers:
        raise FormatError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    position = 0
    for batch in readers[fmt]():
        batch.frame.insert(len(batch.frame.columns), "position", range(position + 1, position + len(batch.frame) + 1))
        position += len(batch.frame)
        yield batch


def _csv_batches(
    path: Path, batch_rows: int, delimiter: str, required: tuple[str, ...], user_col: str
) -> Iterator[tuple[pa.RecordBatch, list[Malformed]]]:
    malformed: list[Malformed] = []

    user_at = 0

    def on_invalid(row: pacsv.InvalidRow) -> str:
        tokens = row.text.split(delimiter)
        user = tokens[user_at].strip() if user_at < len(tokens) and tokens[user_at].strip() else None
        malformed.append(Malformed(row.number, row.text, user, row.actual_columns, row.expected_columns))
        return "skip"

    try:
        with path.open("rb") as fh:
            header = next(csv.reader([fh.readline().decode("utf-8")], delimiter=delimiter), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not a readable text file ({exc})") from exc
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise FormatError(f"{path}: header lacks {', '.join(missing)}; expected columns {', '.join(required)}")
    user_at = header.index(user_col)
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=True
            ),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for rb in reader:
            pending.append(rb)
            rows += rb.num_rows
            if rows >= batch_rows:
                yield from _flush(pending, malformed)
                rows = 0
        yield from _flush(pending, malformed)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot parse as delimited text ({exc})") from exc


def _flush(
    pending: list[pa.RecordBatch], malformed: list[Malformed]
) -> Iterator[tuple[pa.RecordBatch, list[Malformed]]]:
    if not pending and not malformed:
        return
    table = pa.Table.from_batches(pending) if pending else None
    out = table.combine_chunks().to_batches(max_chunksize=None) if table is not None else []
    batch = out[0] if out else pa.RecordBatch.from_pylist([])
    yield batch, list(malformed)
    pending.clear()
    malformed.clear()


def _to_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    """Arrow-backed string columns: validation reads them back as Arrow arrays without a copy."""
    return batch.to_pandas(types_mapper=_ARROW_TEXT.get) if batch.num_columns else pd.DataFrame()


_ARROW_TEXT = {pa.string(): pd.StringDtype("pyarrow")}


def _read_csv(path: Path, batch_rows: int) -> Iterator[RawBatch]:
    for rb, malformed in _csv_batches(path, batch_rows, ",", REQUIRED, "user_id"):
        frame = _to_frame(rb)
        yield RawBatch(frame[[c for c in frame.columns if c in CANONICAL]], malformed)


def _read_session_rec(path: Path, batch_rows: int, event_type: str) -> Iterator[RawBatch]:
    for rb, malformed in _csv_batches(path, batch_rows, "\t", ("SessionId", "ItemId", "Time"), "SessionId"):
        frame = _to_frame(rb)
        if frame.empty:
            yield RawBatch(pd.DataFrame(columns=list(REQUIRED)), malformed)
            continue
        out = pd.DataFrame(
            {
                "user_id": frame["SessionId"],
                "session_id": frame["SessionId"],
                "item_id": frame["ItemId"],
                "event_type": event_type,
                "timestamp": frame["Time"],
            }
        )
        yield RawBatch(out, malformed)


def _read_parquet(path: Path, batch_rows: int) -> Iterator[RawBatch]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(f"{path}: not a Parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise FormatError(f"{path}: columns {', '.join(missing)} missing; expected {', '.join(REQUIRED)}")
    cols = [c for c in names if c in CANONICAL]
    for rb in pf.iter_batches(batch_size=batch_rows, columns=cols):
        frame = pd.DataFrame(
            {name: _as_text(rb.column(name)) for name in cols},
        )
        yield RawBatch(frame)


def _as_text(column: pa.Array) -> pd.Series:
    if pa.types.is_timestamp(column.type):
        series = column.to_pandas()
        if series.dt.tz is None:
            series = series.dt.tz_localize("UTC")
        return series.map(lambda v: v.isoformat() if pd.notna(v) else None).astype("string")
    return column.cast(pa.string()).to_pandas().astype("string")


def _read_amazon(path: Path, batch_rows: int, event_type: str) -> Iterator[RawBatch]:
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"{path}: cannot open ({exc})") from exc
    with fh:
        line_no = 0
        while True:
            users: list[str] = []
            items: list[str] = []
            steps: list[int] = []
            malformed: list[Malformed] = []
            try:
                lines = list(itertools.islice(fh, max(1, batch_rows // 10)))
            except UnicodeDecodeError as exc:
                raise FormatError(f"{path}: not UTF-8 text ({exc})") from exc
            if not lines:
                return
            for line in lines:
                line_no += 1
                tokens = line.split()
                if len(tokens) < 2:
                    if line.strip():
                        malformed.append(
                            Malformed(line_no, line.rstrip("\n"), tokens[0] if tokens else None, len(tokens))
                        )
                    continue
                users.extend([tokens[0]] * (len(tokens) - 1))
                items.extend(tokens[1:])
                steps.extend(range(len(tokens) - 1))
            seconds = AMAZON_EPOCH.timestamp() + pd.Series(steps, dtype="int64") * AMAZON_STEP_SECONDS
            frame = pd.DataFrame(
                {
                    "user_id": pd.Series(users, dtype="string"),
                    "item_id": pd.Series(items, dtype="string"),
                    "event_type": event_type,
                    "timestamp": seconds.astype("int64").astype("string"),
                }
            )
            yield RawBatch(frame, malformed)
