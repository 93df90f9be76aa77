"""The item catalog: ``item_id, title, category, price, in_stock, hidden`` rows from a CSV file.

Any other column of the file is an attribute of its own (brand, colour, ...) that merchandising
rules can test; they are kept together as a JSON object in ``attributes``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recommender.data.events import Reasons, blank, raw_json
from recommender.data.readers import FormatError

CATALOG_COLUMNS = ("item_id", "title", "category", "price", "in_stock", "hidden")
DETAIL_FIELDS = CATALOG_COLUMNS[1:]
MAX_ATTRIBUTES = 32
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.large_string(), nullable=False),
        pa.field("title", pa.large_string()),
        pa.field("category", pa.large_string()),
        pa.field("price", pa.float64()),
        pa.field("in_stock", pa.bool_()),
        pa.field("hidden", pa.bool_()),
        pa.field("attributes", pa.large_string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def read_catalog_csv(path: Path, max_field_length: int = 256) -> tuple[pa.Table, pd.DataFrame]:
    """Read and validate a catalog CSV; returns (items, quarantined rows with reasons)."""
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in CATALOG_COLUMNS}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: cannot read the catalog CSV ({exc})") from exc
    if "item_id" not in table.column_names:
        raise FormatError(f"{path}: catalog header lacks item_id; expected {', '.join(CATALOG_COLUMNS)}")
    extra = [c for c in table.column_names if c not in CATALOG_COLUMNS]
    if len(extra) > MAX_ATTRIBUTES:
        raise FormatError(f"{path}: {len(extra)} attribute columns; at most {MAX_ATTRIBUTES} besides {CATALOG_COLUMNS}")
    attributes = table.select(extra).to_pylist() if extra else [{}] * table.num_rows
    frame = table.select([c for c in table.column_names if c in CATALOG_COLUMNS]).to_pandas()
    frame = frame.reindex(columns=list(CATALOG_COLUMNS))
    reasons = Reasons(len(frame))
    flag = reasons.flag

    flag(blank(frame["item_id"]), "missing_field:item_id")
    for col in ("item_id", "title", "category"):
        flag(frame[col].astype("string").str.len() > max_field_length * 4, f"oversized_field:{col}")
    price = pd.to_numeric(frame["price"], errors="coerce")
    flag(~blank(frame["price"]) & (price.isna() | (price < 0)), "bad_number:price")
    flags = {}
    for col in ("in_stock", "hidden"):
        flags[col] = frame[col].astype("string").str.strip().str.lower()
        flag(~blank(frame[col]) & ~flags[col].isin(_TRUE | _FALSE), f"bad_value:{col}")
    attribute_json = pd.Series([_attributes_json(a) for a in attributes], index=frame.index)
    flag(attribute_json.str.len() > max_field_length * 16, "oversized_field:attributes")
    frame.insert(0, "position", range(1, len(frame) + 1))

    bad_mask = reasons.bad
    good = frame[~bad_mask]
    items = pa.table(
        {
            "item_id": _texts(good["item_id"].astype("string").str.strip()),
            "title": _texts(good["title"]),
            "category": _texts(good["category"].astype("string").str.strip()),
            "price": pa.array(price[~bad_mask].tolist(), pa.float64()),
            **{
                col: pa.array([None if pd.isna(v) else v in _TRUE for v in flags[col][~bad_mask]], pa.bool_())
                for col in ("in_stock", "hidden")
            },
            "attributes": pa.array(
                [v if isinstance(v, str) else None for v in attribute_json[~bad_mask]], pa.large_string()
            ),
            "updated_at": pa.array([datetime.now(UTC)] * len(good), pa.timestamp("us", tz="UTC")),
        },
        schema=ITEM_SCHEMA,
    )
    items = items.take(pa.array((~good["item_id"].duplicated(keep="last")).to_numpy().nonzero()[0]))
    bad_rows = frame[bad_mask]
    bad = pd.DataFrame(
        {
            "position": bad_rows["position"].astype("Int64").to_numpy(),
            "reason": reasons.text(),
            "user_id": None,
            "raw": raw_json(bad_rows.drop(columns=["position"])),
        }
    )
    return items, bad


def details_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored catalog row as the API shows it: the catalog fields, every attribute beside them."""
    extra = json.loads(row["attributes"]) if row.get("attributes") else {}
    return {**extra, **{k: row.get(k) for k in DETAIL_FIELDS}}


def _texts(values: pd.Series) -> pa.Array:
    """A text column, missing values (a column the file does not have) as nulls."""
    return pa.array([None if pd.isna(v) else str(v) for v in values], pa.large_string())


def _attributes_json(row: dict[str, object]) -> str | None:
    """The non-empty extra columns of one row as a JSON object (None when there are none)."""
    kept = {k: v.strip() if isinstance(v, str) else v for k, v in row.items() if v is not None and v != ""}
    return json.dumps(kept, sort_keys=True, default=str) if kept else None


def changed_rows(current: pa.Table, changes: list[tuple[str, dict[str, Any], datetime]]) -> pa.Table:
    """The rows of ``current`` (an :data:`ITEM_SCHEMA` table) that live ``changes`` (item, fields, time) update.

    Changes apply in the order given (the stream's, which is the order the live fields took them),
    so the stored row ends with the value the API serves even when two writers' clocks disagree.
    A change applies when it is newer than the row as stored, so applying the same changes twice
    (a drain that died before trimming) gives the same rows. Unknown items get a row of their own.
    """
    by_id = {row["item_id"]: row for row in current.filter(
        pc.is_in(current.column("item_id"), value_set=pa.array({c[0] for c in changes}, pa.large_string()))
    ).to_pylist()}  # fmt: skip
    stored_at = {item: row["updated_at"] for item, row in by_id.items()}
    for item, fields, at in changes:  # in the order Redis executed them: the order the live fields hold
        row = by_id.setdefault(item, {f.name: None for f in ITEM_SCHEMA} | {"item_id": item})
        if item in stored_at and at <= stored_at[item]:
            continue
        row.update({k: v for k, v in fields.items() if k in CATALOG_COLUMNS and k != "item_id"})
        if extra := {k: v for k, v in fields.items() if k not in CATALOG_COLUMNS}:  # an attribute's live change
            row["attributes"] = _attributes_json({**json.loads(row["attributes"] or "{}"), **extra})
        row["updated_at"] = max(at, row["updated_at"] or at)
    return pa.Table.from_pylist(list(by_id.values()), schema=ITEM_SCHEMA)
