"""A synthetic shop with realistic structure, fully vectorized and seeded.

Structure: power-law item popularity within categories; items of a category come
in "styles" and users prefer one style per category, so there is collaborative
signal beyond popularity; users have sparse category affinities and heavy-tailed
activity; sessions of views turn into carts and purchases at plausible rates;
daily and weekly seasonality; new items keep arriving; optional drift from a
given day (popularity reshuffled and the category mix shifted).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

START = datetime(2023, 1, 1, tzinfo=UTC)
CART_RATE = 0.09
"""Share of views followed by an add-to-cart of the same item."""
PURCHASE_RATE = 0.35
"""Share of carts that are bought."""
MEAN_SESSION_VIEWS = 5.0
BRANDS = 8
"""Brands in a synthetic catalog (an attribute column, for merchandising rules)."""
STYLES = 4
STYLE_LOYALTY = 0.75
"""Probability that a view picks an item of the user's preferred style."""
HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2, 2.2, 2.3, 2.4, 2.6, 2.5, 2.3, 2.2, 2.3, 2.6, 3.2, 3.8, 4.0, 3.6, 2.6, 1.6]
)
WEEKDAY_WEIGHTS = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.25])  # Mon..Sun
CHUNK_VIEWS = 500_000
"""Views generated at a time: bounds the generator's memory (a smaller shop is one chunk)."""
CATEGORY_BLOCK = 100_000


@dataclass(frozen=True)
class ShopSpec:
    """What to generate."""

    users: int = 2_000
    items: int = 500
    events: int = 50_000
    seed: int = 0
    days: int = 60
    drift_from: int | None = None


@dataclass(frozen=True)
class Shop:
    """Generated events and catalog, as Arrow tables in the canonical schema."""

    events: pa.Table
    catalog: pa.Table


def _sample_from_cdf(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)


def _catalog(rng: np.random.Generator, spec: ShopSpec) -> pd.DataFrame:
    n_cat = int(min(np.clip(spec.items // 40, 3, 30), spec.items))
    category = rng.permutation(np.arange(spec.items) % n_cat)  # every category has items
    popularity = 1.0 / np.arange(1, spec.items + 1) ** 1.05
    rng.shuffle(popularity)
    released = np.where(rng.random(spec.items) < 0.75, 0, rng.integers(0, max(spec.days, 1), spec.items))
    base_price = np.exp(rng.normal(3.0, 0.6, n_cat))
    price = np.round(base_price[category] * np.exp(rng.normal(0, 0.4, spec.items)), 2)
    return pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(spec.items)],
            "title": [f"Product {i}" for i in range(spec.items)],
            "category": [f"c{c:02d}" for c in category],
            "price": price,
            "in_stock": rng.random(spec.items) < 0.95,
            "_cat": category,
            "_style": rng.integers(0, STYLES, spec.items),
            "_pop": popularity,
            "_released": released,
        }
    )


def _day_of_sessions(rng: np.random.Generator, spec: ShopSpec, n: int) -> np.ndarray:
    days = np.arange(spec.days)
    weekday = (days + START.weekday()) % 7
    weights = WEEKDAY_WEIGHTS[weekday] * (1.0 + 0.5 * days / max(spec.days, 1))  # growing shop
    return _sample_from_cdf(rng, np.cumsum(weights), n)


def _pick_items(
    rng: np.random.Generator,
    items: pd.DataFrame,
    cat: np.ndarray,
    style: np.ndarray,
    drifted: np.ndarray,
    pops: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """One item per view: popularity-weighted within the category (and, mostly, the user's style)."""
    item_cat, item_style = items["_cat"].to_numpy(), items["_style"].to_numpy()
    loyal = rng.random(len(cat)) < STYLE_LOYALTY
    group = (cat * (STYLES + 1) + np.where(loyal, style, STYLES)) * 2 + drifted
    order = np.argsort(group, kind="stable")
    keys, starts = np.unique(group[order], return_index=True)
    out = np.empty(len(cat), dtype=np.int64)
    for key, lo, hi in zip(keys, starts, [*starts[1:], len(order)], strict=True):
        (c, s), d = divmod(int(key) // 2, STYLES + 1), int(key) % 2
        members = np.flatnonzero((item_cat == c) & ((s == STYLES) | (item_style == s)))
        if len(members) == 0:
            members = np.flatnonzero(item_cat == c)
        rows = order[lo:hi]
        out[rows] = members[_sample_from_cdf(rng, np.cumsum(pops[d][members]), len(rows))]
    return out


@dataclass(frozen=True)
class _Sessions:
    """Every session of the shop: who, when, which category, how many views."""

    user: np.ndarray
    drift: np.ndarray
    cat: np.ndarray
    start: np.ndarray
    length: np.ndarray


def _sessions(rng: np.random.Generator, spec: ShopSpec, n_cat: int) -> tuple[_Sessions, np.ndarray]:
    """The sessions, and each user's preferred style per category."""
    affinity = rng.dirichlet(np.full(n_cat, 0.3), spec.users)
    user_style = rng.integers(0, STYLES, (spec.users, n_cat)).astype(np.int8)
    activity = rng.lognormal(0.0, 1.0, spec.users)

    views_wanted = int(spec.events / (1 + CART_RATE * (1 + PURCHASE_RATE)) * 1.05) + 10
    n_sessions = max(1, int(views_wanted / MEAN_SESSION_VIEWS))
    s_user = _sample_from_cdf(rng, np.cumsum(activity), n_sessions)
    s_day = _day_of_sessions(rng, spec, n_sessions)
    s_drift = np.zeros(n_sessions, dtype=bool) if spec.drift_from is None else s_day >= spec.drift_from
    u = rng.random(n_sessions)[:, None]
    s_cat = np.empty(n_sessions, dtype=np.int64)
    for lo in range(0, n_sessions, CATEGORY_BLOCK):  # sessions x categories at a time: bounded memory
        aff = affinity[s_user[lo : lo + CATEGORY_BLOCK]]
        below = np.cumsum(aff, axis=1) < u[lo : lo + CATEGORY_BLOCK] * aff.sum(axis=1, keepdims=True)
        s_cat[lo : lo + CATEGORY_BLOCK] = np.minimum(below.sum(axis=1), n_cat - 1)
    shift = s_drift & (rng.random(n_sessions) < 0.5)
    s_cat = np.where(shift, (s_cat + 1) % n_cat, s_cat)
    s_start = (
        s_day * 86_400
        + _sample_from_cdf(rng, np.cumsum(HOUR_WEIGHTS), n_sessions) * 3600
        + rng.integers(0, 3600, n_sessions)
    )
    s_len = rng.geometric(1.0 / MEAN_SESSION_VIEWS, n_sessions)
    return _Sessions(s_user, s_drift, s_cat, s_start, s_len), user_style


def _chunk_events(
    rng: np.random.Generator,
    items: pd.DataFrame,
    sessions: _Sessions,
    first: int,
    user_style: np.ndarray,
    pops: list[np.ndarray],
) -> pd.DataFrame:
    """Views, carts and purchases of the sessions numbered ``first`` on (``sessions`` holds just those)."""
    s_len = sessions.length
    local = np.repeat(np.arange(len(s_len)), s_len)
    gaps = rng.exponential(60.0, len(local)).astype(np.int64) + 5
    offset = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(s_len) - s_len], s_len)
    user = sessions.user[local]
    cat = sessions.cat[local]
    if len(pops) == 1:  # the drifted popularity, drawn once for the whole shop
        pops.append(rng.permutation(pops[0]))
    item = _pick_items(rng, items, cat, user_style[user, cat], sessions.drift[local], (pops[0], pops[1]))
    t = sessions.start[local] + offset
    released_at = items["_released"].to_numpy()[item] * 86_400
    t = np.maximum(t, released_at + rng.integers(0, 86_400, len(t)))  # new items appear over time

    cart = rng.random(len(item)) < CART_RATE
    buy = cart & (rng.random(len(item)) < PURCHASE_RATE)
    session = local + first
    kinds = [("view", np.ones(len(item), bool), 0), ("add_to_cart", cart, 20), ("purchase", buy, 240)]
    frames = [
        pd.DataFrame({"u": user[mask], "i": item[mask], "s": session[mask], "t": t[mask] + delay, "event_type": name})
        for name, mask, delay in kinds
    ]
    return pd.concat(frames, ignore_index=True)


def _events_table(ev: pd.DataFrame, items: pd.DataFrame, seed: int, first_id: int) -> pa.Table:
    priced = ev["event_type"] != "view"
    start = int(START.timestamp())
    return pa.table(
        {
            "event_id": pa.array([f"s{seed}-{k}" for k in range(first_id, first_id + len(ev))]),
            "user_id": pa.array(np.char.add("u", ev["u"].to_numpy().astype(str))),
            "item_id": pa.array(items["item_id"].to_numpy()[ev["i"].to_numpy()].astype(str)),
            "event_type": pa.array(ev["event_type"].to_numpy().astype(str)),
            "timestamp": pa.array((start + ev["t"].to_numpy()) * 1_000_000, pa.timestamp("us", tz="UTC")),
            "session_id": pa.array(np.char.add("s", ev["s"].to_numpy().astype(str))),
            "quantity": pa.array(np.ones(len(ev), np.int32), mask=~priced.to_numpy()),
            "price": pa.array(
                np.where(priced, items["price"].to_numpy()[ev["i"].to_numpy()], np.nan), pa.float64(), from_pandas=True
            ),
        }
    )


def iter_shop(spec: ShopSpec, chunk_views: int = CHUNK_VIEWS) -> tuple[pa.Table, Iterator[pa.Table]]:
    """The catalog, and the events in chunks of about ``chunk_views`` views' worth (bounded memory).

    Each chunk is in time order; chunks overlap in time. A shop of up to ``chunk_views`` views is
    one chunk. The same spec always gives the same output.
    """
    if min(spec.users, spec.items, spec.events, spec.days) < 1:
        raise ValueError("users, items, events and days must all be >= 1")
    rng = np.random.default_rng(spec.seed)
    items = _catalog(rng, spec)
    sessions, user_style = _sessions(rng, spec, int(items["_cat"].max()) + 1)
    brands = np.random.default_rng([spec.seed, 1]).integers(0, BRANDS, spec.items)  # own stream: events unchanged
    items["brand"] = [f"b{b}" for b in brands]
    columns = ["item_id", "title", "category", "price", "in_stock", "brand"]
    catalog = pa.Table.from_pandas(items[columns], preserve_index=False)
    views = np.cumsum(sessions.length)
    bounds = [0, *np.searchsorted(views, np.arange(chunk_views, views[-1], chunk_views), side="right"), len(views)]

    def chunks() -> Iterator[pa.Table]:
        pops = [items["_pop"].to_numpy()]
        written = 0
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            part = _Sessions(*(getattr(sessions, f.name)[lo:hi] for f in fields(_Sessions)))
            ev = _chunk_events(rng, items, part, lo, user_style, pops)
            target = spec.events if hi == len(views) else round(spec.events * views[hi - 1] / views[-1])
            size = min(max(target - written, 0), len(ev))
            ev = ev.iloc[np.sort(rng.choice(len(ev), size=size, replace=False))]
            ev = ev.sort_values(["t", "s"], kind="stable").reset_index(drop=True)
            yield _events_table(ev, items, spec.seed, written)
            written += len(ev)

    return catalog, chunks()


def generate(spec: ShopSpec) -> Shop:
    """Generate a shop in memory; the same spec always gives the same output (see :func:`iter_shop`)."""
    catalog, chunks = iter_shop(spec)
    return Shop(events=pa.concat_tables(list(chunks)), catalog=catalog)


def _as_csv(events: pa.Table) -> pa.Table:
    """Events with ISO-8601 timestamps, as the canonical CSV holds them."""
    ts = events.column("timestamp").cast(pa.timestamp("s", tz="UTC"))
    iso = pc.strftime(ts, format="%Y-%m-%dT%H:%M:%SZ")
    return events.set_column(events.schema.get_field_index("timestamp"), "timestamp", iso)


def _write(events: Iterable[pa.Table], catalog: pa.Table, out: Path) -> tuple[Path, Path, int]:
    out.mkdir(parents=True, exist_ok=True)
    events_path, catalog_path = out / "events.csv", out / "catalog.csv"
    options = pacsv.WriteOptions(quoting_style="needed")
    rows, writer = 0, None
    try:
        for chunk in events:
            table = _as_csv(chunk)
            writer = writer or pacsv.CSVWriter(events_path, table.schema, write_options=options)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    pacsv.write_csv(catalog, catalog_path, options)
    return events_path, catalog_path, rows


def write_shop(shop: Shop, out: Path) -> tuple[Path, Path]:
    """Write ``events.csv`` and ``catalog.csv`` into ``out``; returns their paths."""
    events_path, catalog_path, _ = _write([shop.events], shop.catalog, out)
    return events_path, catalog_path


def write_generated(spec: ShopSpec, out: Path) -> tuple[Path, Path, int]:
    """Generate and write a shop chunk by chunk (memory bounded by the chunk); returns the paths and event count."""
    catalog, chunks = iter_shop(spec)
    return _write(chunks, catalog, out)
