"""Compose's start-up check, ``python -m recommender.preflight``: no service starts while a value it is
given still holds the placeholder of ``.env.example``, whichever service reads it (PostgreSQL's and
Grafana's passwords included). It prints the names it refuses, never the values."""

from __future__ import annotations

import os
import sys

from recommender.config import placeholders


def main() -> int:
    """Exit 1, naming each variable of this process's environment that still holds a placeholder."""
    found = placeholders(os.environ)
    if found:
        print(
            f"refusing to start: {', '.join(found)} still hold the .env.example placeholder; "
            "set each in .env to a random value (`openssl rand -hex 32`)",
            file=sys.stderr,
        )
        return 1
    print("preflight: no value holds a placeholder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
