"""The item catalog: ``item_id, title, category, price, in_stock`` rows from a CSV file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recommender.data.events import Reasons, blank, raw_json
from recommender.data.readers import FormatError

CATALOG_COLUMNS = ("item_id", "title", "category", "price", "in_stock")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.large_string(), nullable=False),
        pa.field("title", pa.large_string()),
        pa.field("category", pa.large_string()),
        pa.field("price", pa.float64()),
        pa.field("in_stock", pa.bool_()),
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
    frame = table.to_pandas().reindex(columns=list(CATALOG_COLUMNS))
    reasons = Reasons(len(frame))
    flag = reasons.flag

    flag(blank(frame["item_id"]), "missing_field:item_id")
    for col in ("item_id", "title", "category"):
        flag(frame[col].astype("string").str.len() > max_field_length * 4, f"oversized_field:{col}")
    price = pd.to_numeric(frame["price"], errors="coerce")
    flag(~blank(frame["price"]) & (price.isna() | (price < 0)), "bad_number:price")
    stock_text = frame["in_stock"].astype("string").str.strip().str.lower()
    flag(~blank(frame["in_stock"]) & ~stock_text.isin(_TRUE | _FALSE), "bad_value:in_stock")
    frame.insert(0, "position", range(1, len(frame) + 1))

    bad_mask = reasons.bad
    good = frame[~bad_mask]
    items = pa.table(
        {
            "item_id": pa.array(good["item_id"].astype("string").str.strip().tolist(), pa.large_string()),
            "title": pa.array(good["title"].tolist(), pa.large_string()),
            "category": pa.array(good["category"].astype("string").str.strip().tolist(), pa.large_string()),
            "price": pa.array(price[~bad_mask].tolist(), pa.float64()),
            "in_stock": pa.array([None if pd.isna(v) else v in _TRUE for v in stock_text[~bad_mask]], pa.bool_()),
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
