"""The Helm chart rendered by real Helm (helm-python-sdk binds Helm's Go SDK; no binary, no
cluster), parsed into manifests the tests can read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dualtune"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
PROFILES = ["default", *(path.stem for path in CI_VALUES)]
"""The default values and every file in helm/dualtune/ci/, by name."""

RELEASE = "demo"
NAMESPACE = "ml"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    manifests: list[Manifest]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name} rendered {len(found)} times"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {m["metadata"]["name"] for m in self.of_kind(kind)}


def values_of(profile: str) -> dict[str, Any]:
    if profile == "default":
        return {}
    return cast(dict[str, Any], yaml.safe_load((CHART / "ci" / f"{profile}.yaml").read_text()))


def render(values: dict[str, Any] | None = None, *, upgrade: bool = False) -> Rendered:
    """`helm install --dry-run` (or `helm upgrade --dry-run`) without a cluster: the chart's
    schema is checked first, as Helm does (HelmValuesError), then every template is rendered;
    `lookup` finds nothing, as it finds nothing for `helm template` and GitOps renderers."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(
            values or {},
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=not upgrade,
            is_upgrade=upgrade,
        )
    manifests: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    notes = files[f"{CHART.name}/templates/NOTES.txt"]
    return Rendered(manifests, notes)


@cache
def render_profile(profile: str) -> Rendered:
    return render(values_of(profile))


def pod_specs(manifest: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec a manifest defines, named: workloads, Jobs, and a RayCluster's groups."""
    kind, spec = manifest["kind"], manifest.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield manifest["metadata"]["name"], spec["template"]["spec"]
    elif kind == "RayCluster":
        yield "head", spec["headGroupSpec"]["template"]["spec"]
        for group in spec.get("workerGroupSpecs", []):
            yield group["groupName"], group["template"]["spec"]


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}
