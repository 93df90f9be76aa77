"""A small client of Airflow 3's REST API: what the UI's buttons do, for the demo and the tests."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from recommender.progress import StepFn, silent

FINISHED = {"success", "failed"}


class AirflowError(RuntimeError):
    """Airflow refused a request (``status``: its HTTP status), or a run failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AirflowUnavailableError(AirflowError):
    """Airflow answered 5xx or not at all (on SQLite, a write waits at most 5 s for another's lock)."""


RETRY_SECONDS = 60.0
"""How long a request is retried while Airflow is unavailable."""


@dataclass(frozen=True)
class DagRun:
    """One DAG run's identity and state."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    run_after: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DagRun:
        """From an API answer."""
        return cls(body["dag_id"], body["dag_run_id"], body["state"], body["run_type"], body["run_after"])


class AirflowClient:
    """Token auth (``POST /auth/token``), then ``/api/v2`` with a bearer token."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        token = httpx.post(f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=timeout)
        if not token.is_success:
            raise AirflowError(f"Airflow login failed ({token.status_code}): {token.text[:200]}")
        self.http = httpx.Client(
            base_url=f"{self.url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=timeout,
        )

    @retry(
        retry=retry_if_exception_type(AirflowUnavailableError),
        stop=stop_after_delay(RETRY_SECONDS),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request, retried while Airflow is unavailable: every call here is idempotent (a trigger
        names its run, so a repeated one is a 409, not a second run)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise AirflowUnavailableError(f"{method} {path}: {exc}") from exc
        if not response.is_success:
            error = AirflowUnavailableError if response.status_code >= 500 else AirflowError
            raise error(f"{method} {path}: {response.status_code} {response.text[:300]}", response.status_code)
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> None:
        """Wait until the DAG processor has parsed ``dag_id`` (the UI lists it)."""
        deadline = time.monotonic() + timeout
        while self.http.get(f"/dags/{dag_id}").status_code == 404:
            if time.monotonic() > deadline:
                raise AirflowError(f"DAG {dag_id} not found after {timeout:.0f} s: check the DAG processor log")
            time.sleep(1.0)

    def ensure_pool(self, name: str, slots: int, description: str) -> None:
        """Create the pool ``name`` with ``slots`` slots, or set its slots if it exists."""
        body = {"name": name, "slots": slots, "description": description, "include_deferred": False}
        try:
            self._call("POST", "/pools", json=body)
        except AirflowError as exc:
            if exc.status != 409:  # it exists (perhaps made by an earlier attempt): set its slots
                raise
            self._call("PATCH", f"/pools/{name}", json=body)

    def unpause(self, dag_id: str) -> None:
        """The UI's pause toggle, set to running."""
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> DagRun:
        """The UI's Trigger button (``logical_date`` null: a manual run 'now'), under a run id of its own."""
        run_id = f"manual__{datetime.now(UTC).isoformat()}_{secrets.token_hex(4)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        try:
            return DagRun.from_json(self._call("POST", f"/dags/{dag_id}/dagRuns", json=body))
        except AirflowError as exc:
            if exc.status != 409:  # 409: an earlier attempt, answered 5xx, created it after all
                raise
            return self.run(dag_id, run_id)

    def run(self, dag_id: str, run_id: str) -> DagRun:
        """A run's current state."""
        return DagRun.from_json(self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str, limit: int = 20) -> list[DagRun]:
        """The newest runs of ``dag_id``."""
        body = self._call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": limit})
        return [DagRun.from_json(r) for r in body["dag_runs"]]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task_id -> state for one run."""
        body = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] for t in body["task_instances"]}

    def xcom(self, run: DagRun, task_id: str) -> Any:
        """What ``task_id`` returned in ``run``."""
        path = f"/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self._call("GET", path, params={"deserialize": "true", "stringify": "false"})["value"]

    def wait(self, run: DagRun, timeout: float = 900.0, notify: StepFn = silent) -> DagRun:
        """Wait for ``run`` to finish, reporting task states as they change; raise if it failed."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            current = self.run(run.dag_id, run.run_id)
            states = self.task_states(run.dag_id, run.run_id)
            for task, state in states.items():
                if state != seen.get(task) and state is not None:
                    notify(f"{run.dag_id}.{task}: {state}")
            seen = states
            if current.state in FINISHED:
                if current.state == "failed":
                    failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
                    raise AirflowError(f"{run.dag_id} run {run.run_id} failed at {failed}; see its logs in the UI")
                return current
            time.sleep(2.0)
        raise AirflowError(f"{run.dag_id} run {run.run_id} still {current.state} after {timeout:.0f} s")

    def next_run(self, dag_id: str, after: str, timeout: float = 300.0) -> DagRun:
        """The first run of ``dag_id`` created after ``after`` (ISO time), e.g. one an Asset triggered."""
        since = datetime.fromisoformat(after)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            newer = [r for r in self.runs(dag_id) if datetime.fromisoformat(r.run_after) >= since]
            if newer:
                return newer[-1]
            time.sleep(2.0)
        raise AirflowError(f"no {dag_id} run started after {after} within {timeout:.0f} s")
