"""The Airflow client rides out a busy metadata database: 5xx answers are retried, a trigger runs once.

The server here plays the failure Airflow's API server showed on SQLite ("Database error" 500s while
a task held the write lock) in front of a tiny in-memory DAG-run store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recommender.ops.airflow_api import AirflowClient, AirflowError
from tests.conftest import served_live


class Flaky:
    """An Airflow stand-in whose next ``fail`` writes answer 500 (a trigger's first one after storing the run)."""

    def __init__(self) -> None:
        self.fail = 0
        self.calls: list[tuple[str, str]] = []
        self.runs: dict[str, dict[str, str]] = {}
        self.app = FastAPI()
        self.app.post("/auth/token")(self.token)
        self.app.patch("/api/v2/dags/{dag_id}")(self.patch)
        self.app.post("/api/v2/dags/{dag_id}/dagRuns")(self.trigger)
        self.app.get("/api/v2/dags/{dag_id}/dagRuns/{run_id}")(self.run)

    async def token(self) -> dict[str, str]:
        return {"access_token": "t"}

    def _busy(self) -> JSONResponse | None:
        if self.fail:
            self.fail -= 1
            return JSONResponse({"detail": {"reason": "Database error"}}, status_code=500)
        return None

    async def patch(self, dag_id: str) -> Any:
        self.calls.append(("PATCH", dag_id))
        if dag_id == "missing":
            return JSONResponse({"detail": "not found"}, status_code=404)
        return self._busy() or {"dag_id": dag_id, "is_paused": False}

    async def trigger(self, dag_id: str, request: Request) -> Any:
        body = await request.json()
        self.calls.append(("POST", dag_id))
        if body["dag_run_id"] in self.runs:
            return JSONResponse({"detail": "exists"}, status_code=409)
        self.runs[body["dag_run_id"]] = self._row(dag_id, body["dag_run_id"])
        return self._busy() or self.runs[body["dag_run_id"]]  # stored, then (maybe) a 500 all the same

    async def run(self, dag_id: str, run_id: str) -> Any:
        return self.runs[run_id]

    @staticmethod
    def _row(dag_id: str, run_id: str) -> dict[str, str]:
        return {"dag_id": dag_id, "dag_run_id": run_id, "state": "queued", "run_type": "manual", "run_after": "x"}


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, AirflowClient]]:
    server = Flaky()
    with served_live(server.app) as url:
        yield server, AirflowClient(url, "admin", "pw")


def test_a_busy_database_is_retried_until_the_call_goes_through(flaky: tuple[Flaky, AirflowClient]) -> None:
    server, client = flaky
    server.fail = 2
    client.unpause("ingest_interactions")
    assert server.calls == [("PATCH", "ingest_interactions")] * 3


def test_a_trigger_answered_500_after_storing_its_run_makes_one_run(flaky: tuple[Flaky, AirflowClient]) -> None:
    server, client = flaky
    server.fail = 1
    run = client.trigger("retrain_recommender", {"model": "als"})
    assert [c for c in server.calls if c[0] == "POST"] == [("POST", "retrain_recommender")] * 2  # 500, then 409
    assert list(server.runs) == [run.run_id] and run.state == "queued"


def test_a_refusal_is_not_retried(flaky: tuple[Flaky, AirflowClient]) -> None:
    server, client = flaky
    with pytest.raises(AirflowError, match="404") as refused:
        client.unpause("missing")
    assert refused.value.status == 404 and server.calls == [("PATCH", "missing")]
