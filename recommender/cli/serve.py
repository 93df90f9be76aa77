"""Serving commands: run the API, read a user's or an item's published list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from recommender.cli.common import JsonOpt, app, echo_json, fail, note, settings

if TYPE_CHECKING:
    from recommender.online.lookup import Lookup


@app.command()
def recommend(
    user_id: Annotated[str, typer.Argument(help="Raw user id (hashed as at ingest).")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Print a user's recommendations from Redis."""
    from recommender.registry.lifecycle import recommend as lookup

    out = lookup(settings(), user_id, n, notify=note)
    _print_lookup(out, f"recommendations for {user_id}", as_json)


@app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="Item id.")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Print the items most similar to ITEM_ID from Redis."""
    from recommender.registry.lifecycle import similar as lookup

    out = lookup(settings(), item_id, n, notify=note)
    _print_lookup(out, f"items similar to {item_id}", as_json)


def _print_lookup(out: Lookup, title: str, as_json: bool) -> None:
    if as_json:
        echo_json({"items": out.items, "scores": out.scores, "source": out.source, "version": out.version})
        return
    if out.version is None:
        fail("nothing is published yet: run `recsys publish` first")
    typer.echo(f"{title} [{out.source}, {out.version}]: " + ", ".join(out.items))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default RECSYS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RECSYS_API_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="uvicorn workers (default RECSYS_API_WORKERS).")] = None,
) -> None:
    """Run the recommendation API (and the shop page at /shop/)."""
    from serving.server import serve as run

    cfg = settings()
    run(cfg, host or cfg.api_host, port or cfg.api_port, workers or cfg.api_workers, notify=note)
