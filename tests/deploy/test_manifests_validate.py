"""Every manifest the chart renders is valid for the API server: the core kinds against the
Kubernetes OpenAPI schemas in strict mode (no field Kubernetes does not know), the RayCluster
against the KubeRay ray.io/v1 field list with its pod templates against Kubernetes' own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.chart import PROFILES, Manifest, render_profile

KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
"""The oldest version Chart.yaml's kubeVersion admits and the newest schemas installed."""

RAYCLUSTER_SCHEMA = json.loads(
    (Path(__file__).with_name("kuberay") / "raycluster-v1.schema.json").read_text()
)


def validate_strictly(manifest: Manifest, version: str) -> None:
    kubernetes_validate.validate(manifest, version, strict=True)


def raycluster_errors(manifest: Manifest) -> list[str]:
    validator = jsonschema.Draft202012Validator(RAYCLUSTER_SCHEMA)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


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
    core = [m for m in render_profile(profile).manifests if m["kind"] != "RayCluster"]

    for manifest in core:
        validate_strictly(manifest, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_raycluster_uses_only_kuberay_v1_fields(profile: str, version: str) -> None:
    (cluster,) = render_profile(profile).of_kind("RayCluster")

    assert raycluster_errors(cluster) == []
    spec = cluster["spec"]
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
    (deployment, *_) = render_profile("default").of_kind("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}

    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        validate_strictly(broken, "1.30.0")


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (["spec", "workerGroupSpecs", 0, "maxWorkers"], 4, "maxWorkers"),
        (["spec", "headGroupSpec", "rayStartParams", "num-cpus"], 0, "is not of type 'string'"),
        (["spec", "autoscalerOptions", "upscalingMode"], "Eager", "Eager"),
        (["spec", "enableAutoscaling"], True, "enableAutoscaling"),
    ],
    ids=["unknown group field", "integer ray start param", "upscaling mode", "unknown spec field"],
)
def test_kuberay_schema_refuses_what_the_crd_refuses(
    path: list[Any], value: Any, complaint: str
) -> None:
    (cluster,) = render_profile("default").of_kind("RayCluster")
    broken = json.loads(json.dumps(cluster))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    assert any(complaint in error for error in raycluster_errors(broken))
