"""What every command shares: the Typer app, settings with a clear exit, one-line errors, progress on stderr,
one JSON line on stdout."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

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
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
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


def echo_json(data: object) -> None:
    """Print exactly one JSON line."""
    typer.echo(json.dumps(data, default=str, sort_keys=True))


def note(message: str) -> None:
    """A notice on stderr."""
    err.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)
