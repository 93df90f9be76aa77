"""Fault scenarios: each injects one fault into real processes and servers, then checks the exact state.

``tests/faults`` runs them small, within the suite's budget; ``bench/faults.py`` runs the same
functions at a larger size and records what they return in docs/reliability.md. Every scenario
raises AssertionError when a promise breaks and returns its figures otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import redis

from recommender.config import Settings
from recommender.data.ingest import ingest_file
from recommender.data.privacy import pseudonymize
from recommender.data.store import Store
from recommender.data.synthetic import ShopSpec, generate, write_shop
from recommender.online.keys import Keys
from recommender.ops.pipeline import train_candidate
from recommender.ops.stream import GROUP, drain_stream
from recommender.registry import tracking
from recommender.registry.tracking import TrackingUnavailableError
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
HEADER = "event_id,user_id,item_id,event_type,timestamp\n"
STAGED_FILE_ROWS = 10_000


def cli_env(settings: Settings) -> dict[str, str]:
    """The environment a ``recsys`` child needs to act on ``settings``' state.

    Ingests write a data file every ``STAGED_FILE_ROWS`` rows, so a kill can land while they stage.
    """
    env = {**os.environ, "RECSYS_HOME": str(settings.home_abs), "RECSYS_HMAC_SECRET": secret(settings)}
    env |= {"OPENBLAS_NUM_THREADS": "1", "RECSYS_INGEST_FILE_ROWS": str(STAGED_FILE_ROWS)}
    if settings.redis_url:
        env["RECSYS_REDIS_URL"] = settings.redis_url
    return env


def secret(settings: Settings) -> str:
    return settings.hmac_secret.get_secret_value()


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "recommender.cli", *args, "--json"]


def start_cli(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    """``recsys ARGS --json`` in a child process."""
    return subprocess.Popen(
        _cmd(*args), env=cli_env(settings), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def run_cli(settings: Settings, *args: str) -> Any:
    """``recsys ARGS --json`` to its end; its JSON line (fails on a non-zero exit)."""
    out = subprocess.run(_cmd(*args), env=cli_env(settings), cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, timeout: float = 300) -> float:
    """SIGKILL ``proc`` as soon as ``ready()``; returns the seconds it ran. Fails if it finished first."""
    started = time.monotonic()
    while proc.poll() is None and not ready():
        assert time.monotonic() - started < timeout, f"{what} never happened"
        time.sleep(0.002)
    assert proc.poll() is None, f"the process ended before {what}: nothing was killed midway"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return round(time.monotonic() - started, 3)


def files(folder: Path) -> set[Path]:
    return set(folder.rglob("*.parquet")) if folder.exists() else set()


def table_data(settings: Settings, table: str) -> Path:
    return settings.home_abs / "warehouse" / settings.namespace / table / "data"


def shop(folder: Path, rows: int, seed: int = 5) -> Path:
    """A synthetic shop's events file of ``rows`` events (users u0..)."""
    spec = ShopSpec(users=max(50, rows // 25), items=max(100, rows // 500), events=rows, seed=seed, days=40)
    events, _ = write_shop(generate(spec), folder)
    return events


def killed_ingest(settings: Settings, work: Path, rows: int) -> dict[str, Any]:
    """kill -9 while an ingest writes its data files: the last snapshot stays whole; a rerun stores it all once."""
    events = shop(work / "shop", rows)
    first = work / "first.csv"
    first.write_text(HEADER + "a1,u1,i1,view,2024-01-01T00:00:00Z\n")
    before = ingest_file(first, settings)
    data = table_data(settings, "events")
    known = files(data)
    proc = start_cli(settings, "ingest", str(events))
    ran = kill_when(proc, lambda: bool(files(data) - known), "the first staged data file")
    store = Store(settings)
    left = len(files(data) - known)
    assert store.current_snapshot_id() == before.snapshot_id and store.read_events().num_rows == 1
    retry = ingest_file(events, settings)
    assert retry.reconciles and retry.read == rows and retry.stored + retry.duplicates == rows
    assert store.read_events().num_rows == 1 + retry.stored
    assert len(set(store.read_events().column("event_id").to_pylist())) == 1 + retry.stored
    return {"rows": rows, "killed_after_s": ran, "orphan_files_left": left, "rerun_stored": retry.stored}


def _post_to_stream(settings: Settings, rows: int) -> None:
    """``rows`` events as the API appends them (validated, pseudonymized)."""
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    stream = Keys(settings.redis_prefix).events
    pipe = r.pipeline(transaction=False)
    for k in range(rows):
        user = pseudonymize(f"u{k % 997}", secret(settings))
        fields = {"event_id": f"api-{k}", "user_id": user, "item_id": f"i{k % 311}", "event_type": "view"}
        pipe.xadd(stream, fields | {"timestamp": f"2025-0{1 + k % 9}-01T00:00:00+00:00"})
        if k % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()


def killed_drain(settings: Settings, rows: int) -> dict[str, Any]:
    """kill -9 while a drain stages the stream's events: nothing stored, nothing lost; a rerun stores each once."""
    _post_to_stream(settings, rows)
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    stream = Keys(settings.redis_prefix).events
    data = table_data(settings, "events")
    proc = start_cli(settings, "drain")
    ran = kill_when(proc, lambda: bool(files(data)), "the drain's first staged data file")
    store = Store(settings)
    pending = int(r.xpending(stream, GROUP)["pending"])
    assert store.current_snapshot_id() is None and r.xlen(stream) == rows and pending == rows
    retry = drain_stream(settings, r)
    assert (retry.read, retry.stored, retry.duplicates, retry.quarantined) == (rows, rows, 0, 0) and retry.reconciles
    assert store.read_events().num_rows == rows and r.xlen(stream) == 0
    return {"events": rows, "killed_after_s": ran, "pending_after_kill": pending, "rerun_stored": retry.stored}


def killed_forget(settings: Settings, work: Path, rows: int) -> dict[str, Any]:
    """kill -9 during a forget: the tables stay readable; a rerun completes it and nobody else lost a row."""
    ingest_file(shop(work / "shop", rows), settings)
    store = Store(settings)
    user = pseudonymize("u1", secret(settings))
    table = store.read_events(columns=("user_id",)).column("user_id").to_pylist()
    theirs, others = table.count(user), len(table) - table.count(user)
    tombstones = table_data(settings, "tombstones")
    proc = start_cli(settings, "forget", "u1")
    ran = kill_when(proc, lambda: bool(files(tombstones)), "the tombstone")
    after_kill = store.read_events(columns=("user_id",)).num_rows  # readable, whatever the kill interrupted
    assert after_kill in (others, others + theirs)
    run_cli(settings, "forget", "u1")
    assert_forgotten(settings, user)
    assert store.read_events().num_rows == others
    return {"rows": rows, "user_rows": theirs, "killed_after_s": ran, "rows_after_kill": after_kill}


def assert_forgotten(settings: Settings, user: str) -> None:
    """No snapshot of events or quarantine, and no data file on disk, holds ``user``."""
    store = Store(settings)
    for table in (store.events(), store.quarantine()):
        for snapshot in table.snapshots():
            rows = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=("user_id",)).to_arrow()
            assert user not in set(rows.column("user_id").to_pylist())
        for path in files(table_data(settings, table.name()[-1])):
            assert user not in set(pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist()), path


def ingest_during_forget(settings: Settings, work: Path, rows: int) -> dict[str, Any]:
    """An ingest and a forget of one of its users at the same time: nobody else loses a row, the user stays out."""
    ingest_file(shop(work / "base", rows, seed=5), settings)
    more = shop(work / "more", rows, seed=6)  # the same users, other events (event ids differ by seed)
    user = pseudonymize("u1", secret(settings))
    store = Store(settings)
    base = store.read_events(columns=("user_id",)).column("user_id").to_pylist()
    ingest = start_cli(settings, "ingest", str(more))
    forget = start_cli(settings, "forget", "u1")
    outputs = [proc.communicate(timeout=600) for proc in (ingest, forget)]
    assert ingest.returncode == 0 and forget.returncode == 0, [err.decode()[-1500:] for _, err in outputs]
    summary = json.loads(outputs[0][0].decode().strip().splitlines()[-1])
    assert summary["reconciles"] and summary["read"] == rows and summary["duplicates"] == 0
    new_users = pacsv.read_csv(more, convert_options=pacsv.ConvertOptions(include_columns=["user_id"]))
    others_new = len(new_users) - new_users.column("user_id").to_pylist().count("u1")
    stored = store.read_events(columns=("user_id",)).column("user_id").to_pylist()
    assert user not in set(stored)
    assert len(stored) == len(base) - base.count(user) + others_new  # everyone else's rows, old and new
    assert_forgotten(settings, user)
    theirs_more = summary["forgotten"]  # u1's new rows the ingest itself dropped (the rest the forget deleted)
    return {"rows": rows, "stored": summary["stored"], "forgotten_at_ingest": theirs_more, "others_kept": len(stored)}


def _lost_before_ack(*args: object, **kwargs: object) -> int:
    raise ConnectionError("worker lost before XACK")


def redis_restarted_with_pending_events(settings: Settings, restart: Callable[[], None], rows: int) -> dict[str, Any]:
    """Redis restarted while the stream holds undrained and unacknowledged events: a drain stores each once."""
    _post_to_stream(settings, rows)
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    stream = Keys(settings.redis_prefix).events
    half = rows // 2
    failing = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    failing.xack = _lost_before_ack  # type: ignore[method-assign]
    try:
        drain_stream(settings, failing, limit=half)  # committed to Iceberg, never acknowledged
        raise AssertionError("the drain acknowledged")
    except ConnectionError:
        pass
    assert int(r.xpending(stream, GROUP)["pending"]) == half
    restart()
    r = redis.Redis.from_url(str(settings.redis_url), decode_responses=True)
    assert r.xlen(stream) == rows and int(r.xpending(stream, GROUP)["pending"]) == half  # it survived the restart
    retry = drain_stream(settings, r)
    assert (retry.read, retry.stored, retry.duplicates) == (rows, rows - half, half) and retry.reconciles
    assert Store(settings).read_events().num_rows == rows and r.xlen(stream) == 0
    return {
        "events": rows,
        "pending_at_restart": half,
        "rerun_stored": retry.stored,
        "rerun_duplicates": retry.duplicates,
    }


class Outage:
    """A TCP proxy in front of a server that a scenario can cut and restore at once (a toxiproxy of a few lines):
    while down, connections are refused and open ones are reset, as if the server had died."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        for conn in list(self._open):
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
                conn.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for conn in (source, sink):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def mlflow_down_during_retrain(
    settings: Settings, take_down: Callable[[], None], bring_up: Callable[[], None], work: Path, rows: int
) -> dict[str, Any]:
    """MLflow goes away after the model is registered, before it is made the candidate: the task fails with
    a clear message; its retry (same DAG run) reuses the run and version: one version in the registry.

    ``take_down`` / ``bring_up`` stop the server and start it again (bench/faults.py), or cut and restore the
    network in front of it (:class:`Outage`, the test)."""
    ingest_file(shop(work / "shop", rows), settings)
    snapshot = Store(settings).current_snapshot_id()
    assert snapshot is not None
    request = "retrain_recommender/manual__fault"
    real = tracking._candidate

    def server_gone(*args: Any, **kwargs: Any) -> None:
        take_down()
        real(*args, **kwargs)

    started = time.monotonic()
    with mock.patch.object(tracking, "_candidate", server_gone):
        try:
            train_candidate(settings, {"model": "itemknn"}, snapshot, request_id=request)
            raise AssertionError("the training did not notice MLflow was gone")
        except TrackingUnavailableError as exc:
            message = str(exc)
    failed_after = round(time.monotonic() - started, 3)
    assert settings.tracking_uri in message and "did not answer" in message
    bring_up()
    retry = train_candidate(settings, {"model": "itemknn"}, snapshot, request_id=request)
    c = tracking.client(settings)
    versions = c.search_model_versions(f"name = '{settings.model_name}'")
    assert retry["reused"] and [v.version for v in versions] == [retry["model_version"]]
    candidate = c.get_model_version_by_alias(settings.model_name, tracking.CANDIDATE)
    assert candidate.version == retry["model_version"] and f"val_{settings.gate_metric}" in candidate.tags
    assert tracking.find_request(settings, "retrain_recommender/another-run") is None  # another run trains anew
    return {"rows": rows, "failed_after_s": failed_after, "error": message, "versions_for_the_run": 1}
