"""``python -m serving [--host H] [--port P] [--workers N]``: the API without the pipeline's dependencies.

The slim API image runs this (it has no CLI: typer, MLflow, Airflow are not installed there);
``recsys serve`` runs the same function.
"""

from __future__ import annotations

import argparse
import sys

from recommender.config import get_settings
from serving.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the flags (defaults from RECSYS_API_HOST / _PORT / _WORKERS) and serve until interrupted."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m serving", description="Run the recommendation API.")
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--workers", type=int, default=settings.api_workers)
    args = parser.parse_args(argv)
    serve(settings, args.host, args.port, args.workers, notify=lambda line: print(line, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
