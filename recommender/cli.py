"""``recsys``: the command-line tool. Thin: each command calls one library function.

Every command prints a human summary, or with ``--json`` exactly one JSON line on
stdout; progress and notices go to stderr. Errors are one line that says what to do,
with a non-zero exit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit warns and slows down otherwise

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from recommender.config import Settings, get_settings

app = typer.Typer(help="E-commerce recommendation MLOps system.", no_args_is_help=True, add_completion=False)
err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON line.")]


def settings() -> Settings:
    """Load settings, turning a bad configuration into a clear exit."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"configuration error: {first.get('msg')} ({'.'.join(map(str, first.get('loc', ())))})")
        raise  # unreachable


def fail(message: str, code: int = 1) -> None:
    """Print one error line and exit non-zero."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def progress_bar(quiet: bool) -> Iterator[object]:
    """A rich progress display on stderr; yields a ``progress(stage, done, total)`` callback."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


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
    from recommender.synthetic import ShopSpec, write_shop
    from recommender.synthetic import generate as gen

    spec = ShopSpec(users=users, items=items, events=events, seed=seed, days=days, drift_from=drift_from)
    with err.status("generating shop", spinner="dots") if not as_json else _null():
        shop = gen(spec)
        events_path, catalog_path = write_shop(shop, out)
    result = {
        "events": shop.events.num_rows,
        "items": shop.catalog.num_rows,
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


@contextmanager
def _null() -> Iterator[None]:
    yield None


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
    from recommender.ingest import ingest_file
    from recommender.readers import FormatError

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
def snapshots(as_json: JsonOpt = False) -> None:
    """List the versions of the events table (the ids that training can read)."""
    from recommender.store import Store

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
def demo(as_json: JsonOpt = False) -> None:
    """Run the main job on a synthetic shop in RECSYS_HOME."""
    from recommender.demo import run_demo

    cfg = settings()
    with progress_bar(as_json) as update:
        result = run_demo(cfg, update)  # type: ignore[arg-type]
    s = result.ingest
    if as_json:
        typer.echo(json.dumps({"shop_dir": str(result.shop_dir), "ingest": json.loads(s.to_json())}))
        return
    typer.echo(f"RECSYS_HOME = {cfg.home_abs}")
    typer.echo(f"generated a shop in {result.shop_dir}")
    typer.echo(
        f"ingested {s.read:,} events: stored {s.stored:,}, duplicates {s.duplicates:,}, "
        f"quarantined {s.quarantined:,}; catalog {s.catalog_items:,} items"
    )
    typer.echo(f"events table snapshot: {s.snapshot_id}  (list them: recsys snapshots)")


if __name__ == "__main__":  # pragma: no cover
    app()
