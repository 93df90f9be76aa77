"""Schema-driven fuzzing of every endpoint (schemathesis): no input gets a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from recommender.config import Settings
from serving.app import create_app

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: schemathesis.Case, live_url: str) -> None:
    response = case.call(base_url=live_url, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
