"""Merchandising rules from files: check, store, show and list the history of a placement's rules.

What ``recsys rules`` runs; the API's ``PUT /v1/rules/{placement}`` stores through the same
:mod:`recommender.online.live` functions, so both keep one history.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from recommender.config import Settings
from recommender.online import live
from recommender.online.keys import Keys
from recommender.online.placements import Placement, load_placements
from recommender.online.redis_conn import async_client, redis_url
from recommender.online.rules import RulesError, RuleSet, parse_rules
from recommender.progress import StepFn, silent

T = TypeVar("T")


def read_rules_file(path: Path) -> RuleSet:
    """A rule set from a JSON or YAML file (:class:`RulesError` with one reason per bad rule)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RulesError([{"rule": None, "reasons": [f"cannot read {path}: {exc.strerror}"]}]) from exc
    import yaml

    try:  # YAML is a superset of JSON: one parser for both
        payload = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError([{"rule": None, "reasons": [f"{path} is not valid JSON or YAML: {exc}"]}]) from exc
    return parse_rules(payload)


def _placement(settings: Settings, name: str) -> Placement:
    known = load_placements(settings.placements_file)
    if name not in known:
        raise LookupError(f"no placement {name!r}; placements: {', '.join(known)} (RECSYS_PLACEMENTS_FILE)")
    return known[name]


def _run(settings: Settings, notify: StepFn, work: Callable[[Any, Keys], Awaitable[T]]) -> T:
    async def main(url: str) -> T:
        r = async_client(settings, url, socket_timeout=10, socket_connect_timeout=10)
        try:
            return await work(r, Keys(settings.redis_prefix))
        finally:
            await r.aclose()

    with redis_url(settings, notify) as url:
        return asyncio.run(main(url))


def put_rules_file(settings: Settings, placement: str, path: Path, notify: StepFn = silent) -> dict[str, Any]:
    """Validate ``path`` and make it ``placement``'s rules (recorded as by ``cli:<user>``)."""
    _placement(settings, placement)
    rules = read_rules_file(path)
    by = f"cli:{getpass.getuser()}"
    return _run(settings, notify, lambda r, keys: live.put_rules(r, keys, placement, rules, by))


def show_rules(settings: Settings, placement: str, notify: StepFn = silent) -> dict[str, Any]:
    """``placement``'s rules in force (the config's when none were stored)."""
    configured = _placement(settings, placement).rules
    return _run(settings, notify, lambda r, keys: live.rules_in_force(r, keys, placement, configured))


def rules_history(settings: Settings, placement: str, limit: int = 20, notify: StepFn = silent) -> list[dict[str, Any]]:
    """``placement``'s last ``limit`` rule sets, newest first."""
    _placement(settings, placement)
    return _run(settings, notify, lambda r, keys: live.rules_history(r, keys, placement, limit))
