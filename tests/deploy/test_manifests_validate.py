"""Every manifest the chart renders is valid for the API server: the core kinds against the
Kubernetes OpenAPI schemas in strict mode (no field Kubernetes does not know), the RayCluster
against KubeRay's own ray.io/v1 CRD schema at the oldest and newest operator versions the chart
supports (a field the CRD does not list is an error: the API server would prune it silently),
with its pod templates against Kubernetes' own."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.chart import CHART, PROFILES, ROOT, Manifest, render, values_of

KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
"""The oldest version Chart.yaml's kubeVersion admits and the newest schemas installed."""

KUBERAY = Path(__file__).with_name("kuberay")
KUBERAY_VERSIONS = ["1.3.2", "1.7.0"]
"""The vendored CRDs: the oldest and newest operator the chart claims (Chart.yaml)."""

NOT_CORE = {"RayCluster", "ServiceMonitor"}
"""Kinds from CRDs, which Kubernetes' own schemas do not know."""


def closed(schema: Any) -> Any:
    """A CRD's structural schema as JSON Schema that refuses what the API server prunes:
    every object that lists its properties admits no others, unless the CRD keeps unknown
    fields there (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@cache
def raycluster_schema(kuberay: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((KUBERAY / f"ray.io_rayclusters-v{kuberay}.yaml").read_text(), loader)
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return closed(v1["schema"]["openAPIV3Schema"])  # type: ignore[no-any-return]


def raycluster_errors(manifest: Manifest, kuberay: str) -> list[str]:
    validator = jsonschema.Draft7Validator(raycluster_schema(kuberay))
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


@cache
def cluster_for(profile: str, kuberay: str) -> Manifest:
    """The profile's RayCluster as rendered for an operator of that version."""
    values = values_of(profile)
    values.setdefault("ray", {})["operatorVersion"] = kuberay
    (cluster,) = render(values).of_kind("RayCluster")
    return cluster


def validate_strictly(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def as_pod_template(template: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "t"},
        "template": template,
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_core_manifests_validate_strictly(profile: str, version: str) -> None:
    from tests.deploy.chart import render_profile

    core = [m for m in render_profile(profile).manifests if m["kind"] not in NOT_CORE]

    for manifest in core:
        validate_strictly(manifest, version)


@pytest.mark.parametrize("kuberay", KUBERAY_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_raycluster_validates_against_kuberays_crd(profile: str, kuberay: str) -> None:
    assert raycluster_errors(cluster_for(profile, kuberay), kuberay) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_raycluster_pod_templates_are_kubernetes_pods(profile: str, version: str) -> None:
    spec = cluster_for(profile, KUBERAY_VERSIONS[-1])["spec"]
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        validate_strictly(as_pod_template(group["template"]), version)
    # The autoscaler sidecar's settings are Kubernetes types too.
    options = spec["autoscalerOptions"]
    container = {
        "name": "autoscaler",
        "image": "x",
        "env": options["env"],
        "resources": options["resources"],
        "securityContext": options["securityContext"],
    }
    validate_strictly(as_pod_template({"spec": {"containers": [container]}}), version)


def test_strict_validation_catches_an_unknown_field() -> None:
    from tests.deploy.chart import render_profile

    (deployment, *_) = render_profile("default").of_kind("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}

    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate_strictly(broken, "1.30.0")


@pytest.mark.parametrize("kuberay", KUBERAY_VERSIONS)
@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (["spec", "workerGroupSpecs", 0, "maxWorkers"], 4, "maxWorkers"),
        (["spec", "headGroupSpec", "rayStartParams", "num-cpus"], 0, "is not of type 'string'"),
        (["spec", "autoscalerOptions", "upscalingMode"], "Eager", "Eager"),
        (["spec", "enableAutoscaling"], True, "enableAutoscaling"),
        (
            ["spec", "headGroupSpec", "template", "spec", "containers", 0, "readinesProbe"],
            {},
            "readinesProbe",
        ),
    ],
    ids=[
        "unknown group field",
        "integer ray start param",
        "upscaling mode",
        "unknown spec field",
        "unknown container field",
    ],
)
def test_kuberay_crd_refuses_what_the_api_server_refuses_or_prunes(
    path: list[Any], value: Any, complaint: str, kuberay: str
) -> None:
    broken = json.loads(json.dumps(cluster_for("default", kuberay)))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    assert any(complaint in error for error in raycluster_errors(broken, kuberay))


def test_the_oldest_crd_has_no_autoscaler_version_field() -> None:
    """Why ray.operatorVersion exists: KubeRay 1.3 would prune autoscalerOptions.version, and
    the cluster would quietly run autoscaler v1 (ignoring the per-group idle timeouts)."""
    newest = cluster_for("default", "1.7.0")

    assert newest["spec"]["autoscalerOptions"]["version"] == "v2"
    assert any("'version' was unexpected" in e for e in raycluster_errors(newest, "1.3.2"))


def test_chart_yaml_claims_the_kuberay_versions_it_is_validated_against() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    claimed = chart["annotations"]["dualtune.dev/kuberay-versions"]

    assert claimed == f">={KUBERAY_VERSIONS[0]} <={KUBERAY_VERSIONS[-1]}"
    vendored = sorted(
        re.fullmatch(r"ray\.io_rayclusters-v(.+)\.yaml", p.name).group(1)  # type: ignore[union-attr]
        for p in KUBERAY.glob("ray.io_rayclusters-v*.yaml")
    )
    assert vendored == KUBERAY_VERSIONS
    assert (KUBERAY / "LICENSE").read_text().lstrip().startswith("Apache License")
    default = yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["operatorVersion"]
    assert default == KUBERAY_VERSIONS[-1]


@pytest.mark.parametrize("name", [f"ray.io_rayclusters-v{v}.yaml" for v in KUBERAY_VERSIONS])
def test_vendored_crds_are_kuberays_as_shared(name: str) -> None:
    shared = ROOT.parent / "shared" / "kuberay-crds" / name
    if not shared.exists():
        pytest.skip(f"{shared} is absent (a fresh clone): the vendored copy is used as is")
    assert (KUBERAY / name).read_bytes() == shared.read_bytes()
