"""The Helm chart renders with real Helm for the default values and every file in
helm/dualtune/ci/, `helm lint` finds nothing to warn about, and values.schema.json turns away
values that would deploy something broken."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.deploy.chart import CHART, CI_VALUES, NAMESPACE, PROFILES, render, render_profile

CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "Ingress",
    "Job",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "StatefulSet",
}
WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


def test_every_ci_values_file_is_a_profile() -> None:
    assert {path.stem for path in CI_VALUES} == {
        "external-postgres-values",
        "s3-artifacts-values",
        "ingress-on-values",
        "no-gpu-values",
    }


@pytest.mark.parametrize("profile", PROFILES)
def test_chart_renders_only_known_kinds_with_names_and_labels(profile: str) -> None:
    rendered = render_profile(profile)

    kinds = {m["kind"] for m in rendered.manifests}
    assert kinds <= CORE_KINDS | {"RayCluster"}
    assert {"Deployment", "Service", "RayCluster"} <= kinds
    for manifest in rendered.manifests:
        metadata = manifest["metadata"]
        assert len(metadata["name"]) <= 63
        assert metadata["labels"]["app.kubernetes.io/instance"] == "demo"
        assert "namespace" not in metadata  # helm install --namespace decides
    assert rendered.notes.strip()


@pytest.mark.parametrize(
    "values_file", [None, *CI_VALUES], ids=["default", *(p.stem for p in CI_VALUES)]
)
def test_helm_lint_is_clean(values_file: Any) -> None:
    values = None
    if values_file is not None:
        values = helm.values_from_yaml(values_file.read_text())

    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= WARNING] == []


def test_lint_reports_values_against_the_schema() -> None:
    # The lint call is live: values the schema refuses are errors in its report.
    report = helm.lint(CHART, {"service": {"replicas": -1}}, strict=True)

    assert any("/service/replicas" in m["error"] for m in report["messages"] if m["severity"] == 3)
    assert report["errors"]


def test_ci_values_pass_the_schema() -> None:
    with helm.Chart.load(CHART) as chart:
        for path in CI_VALUES:
            chart.validate_schema(helm.values_from_yaml(path.read_text()))


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"service": {"replicas": -1}}, "/service/replicas"),
    ("negative max GPU workers", {"ray": {"gpuWorkers": {"maxReplicas": 0}}}, "maxReplicas"),
    ("negative min workers", {"ray": {"cpuWorkers": {"minReplicas": -2}}}, "minReplicas"),
    ("unknown top-level key", {"servce": {"replicas": 2}}, "servce"),
    ("unknown nested key", {"mlflow": {"artifact": {"type": "s3"}}}, "artifact"),
    ("image tag as a number", {"service": {"image": {"tag": 1.0}}}, "/service/image/tag"),
    ("unknown pull policy", {"ray": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
    ("artifact store type", {"mlflow": {"artifacts": {"type": "gcs"}}}, "/mlflow/artifacts/type"),
    ("fractional GPUs per pod", {"ray": {"gpuWorkers": {"gpusPerWorker": 0.5}}}, "gpusPerWorker"),
    ("integer rayStartParams", {"ray": {"head": {"rayStartParams": {"num-cpus": 0}}}}, "num-cpus"),
    ("malformed memory", {"service": {"resources": {"limits": {"memory": "1 GB"}}}}, "memory"),
    ("malformed host", {"ingress": {"api": {"host": "https://x.example.com"}}}, "host"),
    ("port out of range", {"mlflow": {"port": 70000}}, "/mlflow/port"),
    ("access mode", {"ray": {"sharedStorage": {"accessMode": "ReadWriteSome"}}}, "accessMode"),
]


@pytest.mark.parametrize(
    ("values", "where"), [(v, w) for _, v, w in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES]
)
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"ray": {"gpuWorkers": {"minReplicas": 5, "maxReplicas": 2}}},
            "ray.gpuWorkers: minReplicas \\(5\\) is above maxReplicas \\(2\\)",
        ),
        ({"mlflow": {"artifacts": {"type": "s3"}}}, "set mlflow.artifacts.s3.bucket"),
        ({"postgresql": {"enabled": False}}, "set externalDatabase.existingSecret"),
        ({"mlflow": {"replicas": 2}}, "needs mlflow.artifacts.pvc.accessMode ReadWriteMany"),
    ],
    ids=["min above max", "s3 without bucket", "no database", "shared RWO artifacts"],
)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)
