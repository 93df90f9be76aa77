"""``recsys rules``: a placement's merchandising rules from JSON or YAML files, and their history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from recommender.cli.common import JsonOpt, app, echo_json, fail, note, settings

rules_app = typer.Typer(help="Merchandising rules per placement (filter, boost, bury, pin, promote, diversity).")
app.add_typer(rules_app, name="rules")
PlacementArg = Annotated[str, typer.Argument(help="A placement of the placements config (home, product, ...).")]
FileArg = Annotated[Path, typer.Argument(help="Rules as JSON or YAML: {rules: [...], diversity: {...}}.")]


def _reasons(exc: Any) -> str:
    return "; ".join(f"rule {e['rule']}: {', '.join(e['reasons'])}" for e in exc.errors)


@contextmanager
def _refusals(path: Path | None = None) -> Iterator[None]:
    """Bad rules and unknown placements as one error line and a non-zero exit."""
    from recommender.online.rules import RulesError

    try:
        yield
    except RulesError as exc:
        fail(f"{path}: {_reasons(exc)}; nothing was stored")
    except LookupError as exc:
        fail(str(exc))


@rules_app.command("check")
def check(path: FileArg, as_json: JsonOpt = False) -> None:
    """Validate a rules file without storing it."""
    from recommender.ops.rules import read_rules_file

    with _refusals(path):
        rules = read_rules_file(path)
    if as_json:
        echo_json({"valid": True, "rules": len(rules.rules)})
        return
    typer.echo(f"{path}: {len(rules.rules)} valid rule(s)")


@rules_app.command("put")
def put(placement: PlacementArg, path: FileArg, as_json: JsonOpt = False) -> None:
    """Make a file the placement's rules (served from the next request; kept in the history)."""
    from recommender.ops.rules import put_rules_file

    with _refusals(path):
        entry = put_rules_file(settings(), placement, path, note)
    if as_json:
        echo_json(entry)
        return
    typer.echo(
        f"{placement}: {len(entry['rules'].get('rules', []))} rule(s) in force since {entry['at']} ({entry['by']})"
    )


@rules_app.command("get")
def get(placement: PlacementArg, as_json: JsonOpt = False) -> None:
    """Print the placement's rules in force."""
    from recommender.ops.rules import show_rules

    with _refusals():
        entry = show_rules(settings(), placement, note)
    if as_json:
        echo_json(entry)
        return
    typer.echo(json.dumps(entry, indent=2))


@rules_app.command("history")
def history(
    placement: PlacementArg,
    limit: Annotated[int, typer.Option("-n", min=1, max=1000, help="How many changes.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List the placement's rule changes, newest first: when, by which key, how many rules."""
    from recommender.ops.rules import rules_history

    with _refusals():
        entries = rules_history(settings(), placement, limit, note)
    if as_json:
        echo_json(entries)
        return
    if not entries:
        typer.echo(f"{placement}: no stored rules (the placements config's apply)")
    for entry in entries:
        rules = entry["rules"]
        diversity = rules.get("diversity") or {}
        typer.echo(f"{entry['at']}  {entry['by']:<20} {len(rules.get('rules', []))} rule(s)  diversity {diversity}")
