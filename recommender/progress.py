"""Callbacks through which long library steps report progress (the CLI renders them)."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: called as a counted step advances."""
StepFn = Callable[[str], None]
"""``step(description)``: called as each long step starts; also used for one-line notices."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A :data:`ProgressFn` that shows nothing."""


def silent(message: str) -> None:
    """A :data:`StepFn` that shows nothing."""
