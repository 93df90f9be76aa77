"""bench/soak.py in a few seconds at a small size: the counts its targets rest on, never its times.

The whole stack of the soak runs (the project's publish of a champion and a challenger, a live catalog
with changes during the run, the API under uvicorn pinned apart from wrk, the four routes of a shop's
mix at a fixed rate, PATCH-to-absent probes); what must hold at any size is asserted here: no answer
from the fallback, no 5xx, every probe's item left out, every cursor's next page served.
"""

from __future__ import annotations

import shutil

import pytest

from bench.soak import MIX, SoakConfig, run

pytestmark = pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("taskset")), reason="needs wrk and taskset (apt-get install wrk)"
)


def test_a_short_soak_serves_every_route_without_fallback_or_errors() -> None:
    out = run(
        SoakConfig(
            items=3000, users=600, live_fields=3000, changes=20, seconds=4, warmup=1, bare_seconds=1, probe_every=0.5
        )
    )
    assert out["live_fields_at_start"] == 3000
    routes = out["routes"]
    assert set(routes) == set(MIX)
    for route, figures in routes.items():
        ok = "202" if route == "events" else "200"
        assert figures["requests"] > 0
        assert set(figures["statuses"]) == {ok}, (route, figures["statuses"])  # no 4xx (no 410 cursor), no 5xx
        assert figures["socket_errors"] == figures["timeouts"] == 0
    assert out["fallback_answers"] == 0 and out["errors_5xx"] == 0
    assert routes["home"]["paginated"] > 0 and routes["home"]["next_pages"] > 0
    assert out["changes"]["sent"] > 0 and set(out["changes"]["statuses"]) == {"200"}
    assert out["patch_to_absent"]["count"] > 0 and out["patch_to_absent"]["timeouts"] == 0
    assert out["redis_written_bytes"] > 0  # the events and sessions of the run were stored
