"""Kubernetes manifests, alert rules and the CI workflow, checked offline (no cluster here).

Every manifest is validated strictly against the Kubernetes API schemas that kubernetes-validate
bundles; then the rules that matter for operating the API are checked directly: probes on the
right paths, resources, an HPA and a PDB that point at the Deployment, secrets from Secrets,
pinned images.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from serving import telemetry
from tests.conftest import REPO

K8S = REPO / "infra" / "k8s"
SENSITIVE = re.compile(r"SECRET|PASSWORD|API_KEYS|REDIS_URL|STORE_URI|REDISCLI_AUTH")


def documents() -> list[dict[str, Any]]:
    return [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"])


KUBERNETES_VERSION = "1.29.0"  # an older release still common in managed clusters; and the newest bundled


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate_strictly_against_the_kubernetes_schemas(path: Path) -> None:
    import kubernetes_validate

    for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
        for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema error


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    import kubernetes_validate

    deployment = by_kind("Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_document_names_its_api_kind_and_metadata() -> None:
    docs = documents()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet"} <= {
        d["kind"] for d in docs
    }
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]


@pytest.mark.parametrize(
    "workload", by_kind("Deployment") + by_kind("StatefulSet"), ids=lambda d: d["metadata"]["name"]
)
def test_workloads_have_probes_resources_pinned_images_and_matching_selectors(workload: dict[str, Any]) -> None:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for c in containers(workload):
        assert c["readinessProbe"] and c["livenessProbe"] and c["resources"]["requests"] and c["resources"]["limits"]
        assert ":" in c["image"] and not c["image"].endswith(":latest")
        for env in c.get("env", []):
            if SENSITIVE.search(env["name"]):  # never a literal in the manifest
                assert "secretKeyRef" in env.get("valueFrom", {}), env


def test_the_api_probes_readiness_and_liveness_and_scales_without_losing_quorum() -> None:
    [api] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "recsys-api"]
    [c] = containers(api)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    [hpa] = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "recsys-api" and hpa["spec"]["minReplicas"] >= 2
    [pdb] = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always proceed
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    assert services["recsys-api"]["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_alert_rules_cover_errors_latency_stale_models_and_failed_retrains() -> None:
    rules = yaml.safe_load((REPO / "infra" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"RecsysApiErrorRate", "RecsysApiLatencyP99", "RecsysStaleModelVersion", "RecsysRetrainFailed"} <= names
    assert {"RecsysEventBacklog", "RecsysEventBacklogNearLimit"} <= names
    exported = [m._name for m in vars(telemetry).values() if isinstance(m, MetricWrapperBase)]
    assert "recsys_event_backlog" in exported
    assert all(any(m in r["expr"] for m in (*exported, "airflow_")) for r in rules)


def test_the_ci_workflow_matches_the_github_schema_and_runs_the_readme_test_command() -> None:
    workflow = REPO / ".github" / "workflows" / "ci.yml"
    checker = Path(sys.executable).with_name("check-jsonschema")
    out = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(workflow)], capture_output=True, check=False
    )
    assert out.returncode == 0, out.stdout
    assert "make test" in workflow.read_text() and "Dockerfile.api" in workflow.read_text()


def test_airflow_helm_values_use_the_project_image_and_these_dags() -> None:
    values = yaml.safe_load((REPO / "infra" / "helm" / "airflow-values.yaml").read_text())
    assert values["airflowVersion"] == "3.3.2" and values["executor"] in ("KubernetesExecutor", "CeleryExecutor")
    assert values["dags"]["gitSync"]["subPath"] == "dags" and "recsys-airflow" in values["defaultAirflowRepository"]


def test_mlflow_needs_a_login_and_only_airflow_reaches_it() -> None:
    [mlflow] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    [container] = containers(mlflow)
    assert "--app-name=basic-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "recsys-mlflow-auth"
    [policy] = [
        p
        for p in by_kind("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert [rule["from"] for rule in policy["spec"]["ingress"]] == [
        [{"podSelector": {"matchLabels": {"tier": "airflow"}}}]
    ]
    helm = yaml.safe_load((REPO / "infra" / "helm" / "airflow-values.yaml").read_text())
    assert {
        "envName": "MLFLOW_TRACKING_PASSWORD",
        "secretName": "recsys-mlflow-auth",
        "secretKey": "admin-password",
    } in helm["secret"]
    assert "pools set iceberg_writers 1" in " ".join(helm["migrateDatabaseJob"]["args"])


def test_redis_and_the_api_admit_only_who_needs_them() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind("NetworkPolicy")}
    redis_policy = next(
        p for p in policies.values() if p["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "redis"}
    )
    assert redis_policy["policyTypes"] == ["Ingress"]
    [rule] = redis_policy["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "recsys-api"}}},
        {"podSelector": {"matchLabels": {"tier": "airflow"}}},
    ] and rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    api = next(
        p for p in policies.values() if p["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "recsys-api"}
    )
    assert api["policyTypes"] == ["Ingress", "Egress"]
    [entry] = api["ingress"]
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in entry["from"] if "namespaceSelector" in p]
    pods = [p["podSelector"]["matchLabels"] for p in entry["from"] if "podSelector" in p]
    assert len(namespaces) + len(pods) == len(entry["from"])  # named peers only, never everyone
    assert {n["kubernetes.io/metadata.name"] for n in namespaces} == {"ingress-nginx", "monitoring"}
    assert pods == [{"tier": "airflow"}]  # the smoke check
    [api_pod] = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "recsys-api"]
    env = {e["name"] for e in containers(api_pod)[0]["env"]}
    assert {"RECSYS_USER_SIGNING_SECRET", "RECSYS_REQUIRE_USER_SIGNATURE", "RECSYS_USER_SIGNATURE_MAX_AGE"} <= env
    to_redis, to_dns = api["egress"]
    assert to_redis["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
    assert {p["port"] for p in to_dns["ports"]} == {53} and "kube-dns" in str(to_dns["to"])
