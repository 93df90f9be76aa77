"""Running the API: ``recsys serve`` (uvicorn, N workers, Redis from settings or embedded)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import uvicorn

from recommender.config import Settings
from recommender.online.redis_conn import redis_url


def describe_access(settings: Settings) -> str:
    """One line on how the API is protected."""
    keys = settings.parsed_api_keys()
    roles = sorted({k.role for k in keys.values()})
    signed = "; personal routes need X-User-Signature below the write role" if settings.require_user_signature else ""
    if settings.keyless:
        return "no API keys (development): reads and events OPEN without a key, admin routes closed"
    if settings.reads_open:
        return f"reads OPEN without a key; events and admin need X-API-Key; {len(keys)} key(s) {roles}{signed}"
    return f"every request needs X-API-Key; {len(keys)} key(s) configured {roles}{signed}"


def serve(settings: Settings, host: str, port: int, workers: int, notify: Callable[[str], None]) -> None:
    """Run uvicorn until interrupted; an embedded Valkey is started when no Redis is configured."""
    with redis_url(settings, notify) as url:
        os.environ["RECSYS_REDIS_URL"] = url  # the workers read their settings from the environment
        if workers > 1:
            metrics_dir = settings.home_abs / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir(parents=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        notify(f"API on http://{host}:{port} (docs /docs, shop /shop/, metrics /metrics), {workers} worker(s)")
        notify(describe_access(settings))
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            proxy_headers=bool(settings.forwarded_allow_ips),
            forwarded_allow_ips=settings.forwarded_allow_ips or None,
        )
