"""Data commands: generate a shop, ingest files, drain the API's events, list snapshots, forget a user."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from recommender.cli.common import JsonOpt, app, echo_json, err, fail, note, progress_bar, settings


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for events.csv and catalog.csv.")],
    users: Annotated[int, typer.Option(min=1)] = 2_000,
    items: Annotated[int, typer.Option(min=1)] = 500,
    events: Annotated[int, typer.Option(min=1)] = 50_000,
    seed: int = 0,
    days: Annotated[int, typer.Option(min=1)] = 60,
    drift_from: Annotated[int | None, typer.Option(help="Day from which popularity and category mix shift.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic shop (events.csv, catalog.csv) in the canonical format."""
    from recommender.data.synthetic import ShopSpec, write_generated

    spec = ShopSpec(users=users, items=items, events=events, seed=seed, days=days, drift_from=drift_from)
    with err.status("generating shop", spinner="dots") if not as_json else nullcontext():
        events_path, catalog_path, written = write_generated(spec, out)
    result = {
        "events": written,
        "items": items,
        "events_path": str(events_path),
        "catalog_path": str(catalog_path),
        "seed": seed,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"wrote {result['events']:,} events to {events_path} and {result['items']:,} items to {catalog_path}"
        )


@app.command()
def ingest(
    path: Annotated[
        Path, typer.Argument(help="Events file: canonical CSV/Parquet, Amazon 5-core, or session-rec TSV.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, parquet, amazon-5core, session-rec.")] = "auto",
    catalog: Annotated[
        Path | None, typer.Option(help="Item catalog CSV: item_id,title,category,price,in_stock.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, pseudonymize, deduplicate and store events as one new table snapshot."""
    from recommender.data.ingest import ingest_file
    from recommender.data.readers import FormatError

    cfg = settings()
    try:
        with progress_bar(as_json) as update:
            summary = ingest_file(path, cfg, fmt, catalog=catalog, progress=update)  # type: ignore[arg-type]
    except FormatError as exc:
        fail(f"{exc}. Nothing was stored.")
    if as_json:
        typer.echo(summary.to_json())
        return
    typer.echo(
        f"read {summary.read:,} rows from {path}: stored {summary.stored:,}, "
        f"duplicates {summary.duplicates:,}, quarantined {summary.quarantined:,}"
    )
    for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  quarantined {count:,} x {reason}")
    if summary.catalog_items is not None:
        typer.echo(f"catalog: {summary.catalog_items:,} items ({summary.catalog_quarantined or 0:,} rows quarantined)")
    typer.echo(f"snapshot {summary.snapshot_id} (was {summary.previous_snapshot_id}) in {summary.seconds:.1f}s")


@app.command()
def land(as_json: JsonOpt = False) -> None:
    """Ingest the files waiting in the landing folder: catalogs first, the event files in one snapshot."""
    from recommender.data.landing import ingest_landing

    cfg = settings()
    with progress_bar(as_json) as update:
        summary = ingest_landing(cfg, progress=update)  # type: ignore[arg-type]
    if as_json:
        echo_json(summary.to_dict())
        return
    committed = summary.ingest or {}
    typer.echo(
        f"{len(summary.files):,} files from {summary.folder}: stored {summary.stored:,} events in snapshot "
        f"{committed.get('snapshot_id')}, {len(summary.failed):,} unreadable (moved to failed/)"
    )
    for f in summary.files:
        typer.echo(f"  {Path(f.file).name}: {f.error or f'{f.kind}, {f.stored or f.items:,} stored'}")


@app.command()
def drain(as_json: JsonOpt = False) -> None:
    """Store the events the API accepted (the Redis stream) as one snapshot, and the live catalog changes."""
    from recommender.online.redis_conn import connect
    from recommender.ops.stream import drain_catalog, drain_stream

    cfg = settings()
    with connect(cfg, note) as r, progress_bar(as_json) as update:
        summary = drain_stream(cfg, r, progress=update)  # type: ignore[arg-type]
        changes = drain_catalog(cfg, r)
    if as_json:
        echo_json({**summary.to_dict(), "catalog_changes": changes})
        return
    typer.echo(
        f"drained {summary.read:,} events from the stream: stored {summary.stored:,}, "
        f"duplicates {summary.duplicates:,}, quarantined {summary.quarantined:,}; snapshot {summary.snapshot_id}; "
        f"{changes:,} live catalog changes stored in the items table"
    )


@app.command()
def snapshots(as_json: JsonOpt = False) -> None:
    """List the versions of the events table (the ids that training can read)."""
    from recommender.data.store import Store

    snaps = Store(settings()).snapshots()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "snapshot_id": s.snapshot_id,
                        "committed_at": s.committed_at.isoformat(),
                        "operation": s.operation,
                        **s.properties,
                    }
                    for s in snaps
                ]
            )
        )
        return
    if not snaps:
        typer.echo("no snapshots yet: run `recsys ingest FILE` first")
    for s in snaps:
        p = s.properties
        typer.echo(
            f"{s.snapshot_id}  {s.committed_at:%Y-%m-%d %H:%M:%S}  {s.operation:<9} "
            f"stored={p.get('recsys.stored', '?')} source={p.get('recsys.source', '?')}"
        )


@app.command()
def forget(
    user_id: Annotated[str | None, typer.Argument(help="Raw user id (hashed as at ingest).")] = None,
    pending: Annotated[bool, typer.Option(help="Also complete deletions requested through the API.")] = False,
    purge_models: Annotated[
        bool, typer.Option(help="Then delete model versions past the retention that hold a forgotten user.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget a user: Redis at once, a tombstone, their stored events and every older snapshot."""
    from recommender.ops.forget import forget_pending, forget_user, purge_forgotten_models

    cfg = settings()
    if user_id is None and not pending and not purge_models:
        fail("give USER_ID, --pending to complete the API's queued deletions, or --purge-models")
    reports = ([forget_user(cfg, user_id)] if user_id else []) + (forget_pending(cfg) if pending else [])
    purged = purge_forgotten_models(cfg) if purge_models else None
    if as_json:
        echo_json({"forgotten": [r.to_dict() for r in reports], "purged": purged and purged.to_dict()})
        return
    for r in reports:
        typer.echo(
            f"forgot {r.user_id[:12]}...: {r.redis_lists} Redis lists, {r.stream_entries} stream entries, "
            + ", ".join(f"{k} {v}" for k, v in r.store.items())
            + (f"; still in model versions {', '.join(r.model_versions)}" if r.model_versions else "")
        )
    if purged is not None:
        kept = ", ".join(f"v{v} ({why})" for v, why in purged.kept.items()) or "none"
        typer.echo(f"deleted model versions: {', '.join(purged.deleted) or 'none'}; kept: {kept}")
