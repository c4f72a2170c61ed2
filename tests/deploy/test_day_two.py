"""What breaks on day two of a real cluster, checked in the rendered chart: MLflow migrates
its schema before it serves; generated secrets are kept and an upgrade that cannot read them
fails instead of rotating them; per-group idle timeouts select autoscaler v2 the way the
operator version reads it; CPU-only sweeps have CPU workers and pods fit common nodes'
allocatable; NetworkPolicies admit exactly the callers each component has; the MLflow
ingress needs auth and the API ingress does not publish /metrics; PodDisruptionBudgets and a
ServiceMonitor select the pods and Service they are for; the chart README names every value.
Each item is switched by values, and values.schema.json refuses the combinations that would
deploy it broken."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    PROFILES,
    Manifest,
    Rendered,
    containers,
    env_of,
    pod_specs,
    render,
    render_profile,
    values_of,
)

API = "demo-dualtune"
MLFLOW = "demo-dualtune-mlflow"
POSTGRES = "demo-dualtune-postgresql"
RAY = "demo-dualtune-ray"


def refused(values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render(values)


def cluster_of(rendered: Rendered) -> Manifest:
    (cluster,) = rendered.of_kind("RayCluster")
    return cluster


def groups(cluster: Manifest) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in cluster["spec"].get("workerGroupSpecs", [])}


# --- MLflow migrates its schema before it serves -------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_mlflow_upgrades_its_database_before_the_server_starts(profile: str) -> None:
    pod = render_profile(profile).one("Deployment", MLFLOW)["spec"]["template"]["spec"]
    (upgrade,) = pod["initContainers"]
    (server,) = pod["containers"]

    assert upgrade["command"] == ["mlflow", "db", "upgrade", "$(MLFLOW_BACKEND_STORE_URI)"]
    assert upgrade["image"] == server["image"]
    # The same database, whether composed from the bundled Postgres or from a Secret.
    backend = "MLFLOW_BACKEND_STORE_URI"
    assert env_of(upgrade)[backend] == env_of(server)[backend]
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in server["command"]


# --- generated secrets are kept, and an upgrade that cannot find them fails ----------------

GENERATED = {f"{RAY}-auth": "ray.auth.existingSecret", POSTGRES: "postgresql.auth.existingSecret"}


def test_generated_secrets_outlive_uninstall() -> None:
    secrets = {s["metadata"]["name"]: s for s in render_profile("default").of_kind("Secret")}

    assert set(secrets) == set(GENERATED)
    for secret in secrets.values():
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_an_upgrade_that_cannot_read_the_ray_token_fails_and_says_what_to_do() -> None:
    with pytest.raises(helm.HelmRenderError) as failure:
        render(upgrade=True)

    message = str(failure.value)
    assert f"Secret {RAY}-auth (key auth_token) was not found in namespace ml" in message
    assert "set ray.auth.existingSecret" in message
    assert "README.md" in message


def test_an_upgrade_that_cannot_read_the_postgres_password_fails_and_says_what_to_do() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"set postgresql\.auth\.existingSecret"):
        render({"ray": {"auth": {"existingSecret": "my-ray-token"}}}, upgrade=True)


@pytest.mark.parametrize(
    "values",
    [
        {"ray": {"auth": {"existingSecret": "t"}}}
        | {"postgresql": {"auth": {"existingSecret": "p"}}},
        {"ray": {"auth": {"existingSecret": "t"}}, "postgresql": {"enabled": False}}
        | {"externalDatabase": {"existingSecret": "db"}},
    ],
    ids=["existing secrets", "existing token, external database"],
)
def test_an_upgrade_with_existing_secrets_renders_without_the_cluster(
    values: dict[str, Any],
) -> None:
    rendered = render(values, upgrade=True)

    assert rendered.of_kind("Secret") == []


def test_the_readme_tells_gitops_users_to_bring_their_secrets() -> None:
    readme = (CHART / "README.md").read_text()
    section = readme[readme.index("## Secrets") :]

    for value in GENERATED.values():
        assert f"`{value}`" in section
    assert "GitOps" in section
    assert "helm.sh/resource-policy: keep" in section


def test_schema_refuses_a_secret_name_kubernetes_would() -> None:
    refused({"ray": {"auth": {"existingSecret": "My_Token"}}}, "/ray/auth/existingSecret")


# --- per-group idle timeouts select autoscaler v2 ------------------------------------------


def autoscaler_kuberay_runs(cluster: Manifest, operator: str) -> str:
    """The autoscaler version the operator picks, as KubeRay's IsAutoscalingV2Enabled reads
    it: from 1.4 the field spec.autoscalerOptions.version (and nothing else), before 1.4 the
    head container's RAY_enable_autoscaler_v2."""
    spec = cluster["spec"]
    if tuple(map(int, operator.split("."))) >= (1, 4):
        return str(spec["autoscalerOptions"].get("version", "v1"))
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    flag = env_of(head).get("RAY_enable_autoscaler_v2", {}).get("value")
    return "v2" if flag in ("1", "true") else "v1"


def with_operator(values: dict[str, Any], operator: str) -> dict[str, Any]:
    values = yaml.safe_load(yaml.safe_dump(values))
    values.setdefault("ray", {})["operatorVersion"] = operator
    return values


@pytest.mark.parametrize("operator", ["1.3.2", "1.7.0"])
@pytest.mark.parametrize("profile", PROFILES)
def test_per_group_idle_timeouts_run_on_autoscaler_v2(profile: str, operator: str) -> None:
    cluster = cluster_of(render(with_operator(values_of(profile), operator)))
    spec = cluster["spec"]
    per_group = [g for g in groups(cluster).values() if "idleTimeoutSeconds" in g]

    assert per_group, "the default groups set their own idle timeouts"
    assert autoscaler_kuberay_runs(cluster, operator) == "v2"
    # v2 never restarts a Ray node in place; KubeRay >= 1.4 refuses anything but Never.
    assert spec["headGroupSpec"]["template"]["spec"]["restartPolicy"] == "Never"
    for group in groups(cluster).values():
        assert group["template"]["spec"]["restartPolicy"] == "Never"
    # KubeRay >= 1.4 refuses a cluster with both the field and the environment switch.
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    both = "version" in spec["autoscalerOptions"] and "RAY_enable_autoscaler_v2" in env_of(head)
    assert not both


def test_default_groups_keep_their_documented_timeouts() -> None:
    cluster = cluster_of(render_profile("default"))

    assert {name: g["idleTimeoutSeconds"] for name, g in groups(cluster).items()} == {
        "gpu": 300,
        "cpu": 300,
    }
    assert cluster["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 60


def test_autoscaler_v1_uses_the_cluster_wide_timeout_only() -> None:
    no_group_timeouts = {"gpuWorkers": {"idleTimeoutSeconds": None}}
    no_group_timeouts |= {"cpuWorkers": {"idleTimeoutSeconds": None}}
    values = {"ray": {"autoscaler": {"version": "v1", "idleTimeoutSeconds": 120}}}
    values["ray"] |= no_group_timeouts
    cluster = cluster_of(render(values))

    assert autoscaler_kuberay_runs(cluster, "1.7.0") == "v1"
    assert cluster["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 120
    assert all("idleTimeoutSeconds" not in g for g in groups(cluster).values())
    assert "restartPolicy" not in cluster["spec"]["headGroupSpec"]["template"]["spec"]


def test_schema_refuses_per_group_timeouts_with_autoscaler_v1() -> None:
    # v1 would silently ignore them (the 60 s cluster-wide timeout would apply).
    refused({"ray": {"autoscaler": {"version": "v1"}}}, "/ray/gpuWorkers/idleTimeoutSeconds")


@pytest.mark.parametrize("operator", ["1.1.0", "1.2.2", "2.0.0", "latest"])
def test_schema_refuses_operator_versions_the_chart_is_not_validated_against(
    operator: str,
) -> None:
    refused({"ray": {"operatorVersion": operator}}, "/ray/operatorVersion")


# --- CPU workers for CPU-only sweeps; pods that fit common nodes ---------------------------

GIB = 2**30


def quantity(value: Any) -> Decimal:
    text = str(value)
    units = {"m": Decimal("0.001"), "Ki": 2**10, "Mi": 2**20, "Gi": GIB, "Ti": 2**40}
    units |= {"k": 10**3, "M": 10**6, "G": 10**9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return Decimal(text.removesuffix(suffix)) * Decimal(units[suffix])
    return Decimal(text)


def gke_allocatable(vcpus: int, memory_gib: int) -> tuple[Decimal, Decimal]:
    """A node's allocatable CPU and memory by GKE's documented reservations, the largest of
    the big three clouds': CPU 6% of the first core, 1% of the second, 0.5% of the next two,
    0.25% above; memory 25% of the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of
    the next 112, plus a 100 MiB eviction threshold."""
    cpu_tiers = [(1, "0.06"), (1, "0.01"), (2, "0.005"), (10**6, "0.0025")]
    memory_tiers = [(4, "0.25"), (4, "0.20"), (8, "0.10"), (112, "0.06"), (10**6, "0.02")]

    def reserved(total: int, tiers: list[tuple[int, str]]) -> Decimal:
        left, out = Decimal(total), Decimal(0)
        for size, share in tiers:
            step = min(left, Decimal(size))
            out, left = out + step * Decimal(share), left - step
        return out

    cpu = vcpus - reserved(vcpus, cpu_tiers)
    memory = (memory_gib - reserved(memory_gib, memory_tiers)) * GIB - 100 * 2**20
    return cpu, memory


DAEMONSETS = (Decimal("0.5"), Decimal(GIB * 3 // 2))
"""Room left for a node's DaemonSets: CNI, kube-proxy, the NVIDIA device plugin, agents."""


@pytest.mark.parametrize(
    ("group", "node"), [("gpu", (8, 32)), ("cpu", (4, 16))], ids=["gpu 8x32", "cpu 4x16"]
)
def test_worker_pods_fit_the_allocatable_of_common_nodes(
    group: str, node: tuple[int, int]
) -> None:
    worker = groups(cluster_of(render_profile("default")))[group]
    (container,) = worker["template"]["spec"]["containers"]
    cpu, memory = gke_allocatable(*node)

    for kind in ("requests", "limits"):
        resources = container["resources"][kind]
        assert quantity(resources["cpu"]) <= cpu - DAEMONSETS[0], (kind, resources, cpu)
        assert quantity(resources["memory"]) <= memory - DAEMONSETS[1], (kind, resources)
    # Ray is told the CPUs the pod has, so it never packs more trials than fit.
    assert Decimal(worker["rayStartParams"]["num-cpus"]) <= quantity(
        container["resources"]["limits"]["cpu"]
    )


def test_the_capacity_sized_pod_of_old_would_not_fit() -> None:
    cpu, memory = gke_allocatable(8, 32)

    assert quantity("8") > cpu
    assert quantity("32Gi") > memory


def test_cpu_only_sweeps_have_a_cpu_group_by_default() -> None:
    by_name = groups(cluster_of(render_profile("default")))
    (container,) = by_name["cpu"]["template"]["spec"]["containers"]

    assert set(by_name) == {"gpu", "cpu"}
    assert by_name["cpu"]["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert by_name["cpu"]["minReplicas"] == 0  # no idle CPU nodes either


def test_schema_refuses_a_cluster_without_worker_groups() -> None:
    both_off = {"gpuWorkers": {"enabled": False}, "cpuWorkers": {"enabled": False}}
    refused({"ray": both_off}, "/ray/cpuWorkers/enabled")


# --- NetworkPolicies ------------------------------------------------------------------------


def pods(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """Every pod the chart makes, by a short name: its labels and named container ports."""
    found: dict[str, dict[str, Any]] = {}
    for manifest in rendered.manifests:
        kind, spec = manifest["kind"], manifest.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "Job"):
            templates = {manifest["metadata"]["name"]: spec["template"]}
        elif kind == "RayCluster":
            templates = {"ray-head": spec["headGroupSpec"]["template"]}
            templates |= {f"ray-{g['groupName']}": g["template"] for g in spec["workerGroupSpecs"]}
        else:
            continue
        for name, template in templates.items():
            ports = {
                port["name"]: port["containerPort"]
                for container in template["spec"]["containers"]
                for port in container.get("ports", [])
                if "name" in port
            }
            found[name] = {"labels": template["metadata"]["labels"], "ports": ports}
    return found


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def admits(rendered: Rendered, source: str, target: str, port: int) -> bool:
    """Whether the chart's NetworkPolicies let `source` open `port` on `target` (both pods of
    the release's namespace), as the API server's semantics have it: a pod no policy selects
    admits everything; else any rule of any policy selecting it must match."""
    everyone = pods(rendered)
    source_pod, target_pod = everyone[source], everyone[target]
    policies = [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if selects(p["spec"]["podSelector"], target_pod["labels"])
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            from_source = peers is None or any(
                set(peer) == {"podSelector"} and selects(peer["podSelector"], source_pod["labels"])
                for peer in peers
            )
            ports = [
                p["port"] if isinstance(p["port"], int) else target_pod["ports"][p["port"]]
                for p in rule.get("ports", [])
            ]
            if from_source and (not ports or port in ports):
                return True
    return False


FLOWS = [
    # (source, target, port, admitted)
    (API, POSTGRES, 5432, True),
    (MLFLOW, POSTGRES, 5432, True),
    ("ray-head", POSTGRES, 5432, False),
    ("ray-gpu", POSTGRES, 5432, False),
    (API, MLFLOW, 5000, True),
    ("ray-head", MLFLOW, 5000, True),
    ("ray-cpu", MLFLOW, 5000, True),
    (POSTGRES, MLFLOW, 5000, False),
    ("ray-head", API, 8000, True),
    (MLFLOW, API, 8000, False),
    (API, "ray-head", 8265, True),
    (API, "ray-head", 6379, False),
    (MLFLOW, "ray-head", 8265, False),
    ("ray-gpu", "ray-head", 6379, True),
    ("ray-head", "ray-cpu", 10002, True),
    ("ray-cpu", "ray-gpu", 20000, True),
    (API, "ray-gpu", 10002, False),
]


@pytest.mark.parametrize(
    ("source", "target", "port", "admitted"),
    FLOWS,
    ids=[f"{s}->{t}:{p}" for s, t, p, _ in FLOWS],
)
def test_network_policies_admit_each_component_its_callers_only(
    source: str, target: str, port: int, admitted: bool
) -> None:
    assert admits(render_profile("default"), source, target, port) is admitted


def test_the_policies_select_every_pod_the_chart_makes() -> None:
    rendered = render_profile("default")
    selectors = [p["spec"]["podSelector"] for p in rendered.of_kind("NetworkPolicy")]

    for name, pod in pods(rendered).items():
        assert any(selects(s, pod["labels"]) for s in selectors), name


def test_network_policies_can_be_switched_off() -> None:
    rendered = render({"networkPolicy": {"enabled": False}})

    assert rendered.of_kind("NetworkPolicy") == []
    assert admits(rendered, "ray-gpu", POSTGRES, 5432)


def peers_of(rendered: Rendered, name: str) -> list[dict[str, Any]]:
    policy = rendered.one("NetworkPolicy", name)
    return [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]


def test_the_ingress_controller_reaches_what_the_ingresses_publish() -> None:
    controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}
    values = values_of("ingress-on-values") | {
        "networkPolicy": {"enabled": True, "ingressControllerPeers": [controller]}
    }
    published = render(values)
    private = render_profile("default")

    assert controller in peers_of(published, API)
    assert controller in peers_of(published, MLFLOW)
    assert not any("namespaceSelector" in p for p in peers_of(private, MLFLOW))
    ingress_nginx = values_of("ingress-on-values")["ingress"]
    api_only = render({"ingress": ingress_nginx | {"mlflow": {"host": ""}}})
    assert not any("namespaceSelector" in p for p in peers_of(api_only, MLFLOW))


def test_schema_refuses_a_peer_that_is_not_a_network_policy_peer() -> None:
    refused({"networkPolicy": {"metricsPeers": [{"namespace": "monitoring"}]}}, "namespace")


# --- the MLflow ingress needs auth; the API ingress does not publish /metrics ---------------


def ingress(rendered: Rendered, name: str) -> Manifest:
    return rendered.one("Ingress", name)


def test_the_mlflow_ingress_is_behind_basic_auth() -> None:
    rendered = render_profile("ingress-on-values")
    annotations = ingress(rendered, MLFLOW)["metadata"]["annotations"]

    assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    assert annotations["nginx.ingress.kubernetes.io/auth-secret"] == "mlflow-basic-auth"
    # The chart-wide annotations apply to both; the auth ones to the UI only.
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "8m"
    api_annotations = ingress(rendered, API)["metadata"]["annotations"]
    assert not any("auth" in key for key in api_annotations)


def test_the_mlflow_ingress_takes_the_auth_annotations_your_controller_needs() -> None:
    forward = {"traefik.ingress.kubernetes.io/router.middlewares": "auth-forward@kubernetescrd"}
    values = {"ingress": {"enabled": True, "mlflow": {"host": "mlflow.example.com"}}}
    values["ingress"]["mlflow"]["auth"] = {"annotations": forward}

    annotations = ingress(render(values), MLFLOW)["metadata"]["annotations"]

    assert annotations == forward


@pytest.mark.parametrize(
    "auth",
    [None, {}, {"basicAuthSecret": ""}, {"annotations": {}}],
    ids=["no auth key", "empty auth", "empty secret", "no annotations"],
)
def test_schema_refuses_an_mlflow_ingress_without_auth(auth: dict[str, Any] | None) -> None:
    mlflow: dict[str, Any] = {"host": "mlflow.example.com"}
    if auth is not None:
        mlflow["auth"] = auth
    # Without an auth key, values.yaml's own (empty) one applies.
    refused({"ingress": {"enabled": True, "mlflow": mlflow}}, "/ingress/mlflow/auth")


def routes(rendered: Rendered, path: str) -> bool:
    for rule in ingress(rendered, API)["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and entry["path"] == path:
                return True
            prefix = entry["path"].rstrip("/")
            if entry["pathType"] == "Prefix" and (path == prefix or path.startswith(prefix + "/")):
                return True
    return False


@pytest.mark.parametrize(
    ("path", "published"),
    [
        ("/metrics", False),
        ("/metrics/", False),
        ("/api/v1/sweeps", True),
        ("/api/v1/worker/s1/events", True),
        ("/healthz", True),
        ("/readyz", True),
        ("/docs", True),
        ("/openapi.json", True),
    ],
)
def test_the_api_ingress_publishes_the_api_and_not_metrics(path: str, published: bool) -> None:
    assert routes(render_profile("ingress-on-values"), path) is published


# --- PodDisruptionBudgets and the ServiceMonitor ---------------------------------------------


def test_disruption_budgets_keep_api_and_mlflow_replicas_up_through_drains() -> None:
    rendered = render_profile("default")
    budgets = {b["metadata"]["name"]: b for b in rendered.of_kind("PodDisruptionBudget")}

    assert set(budgets) == {API, MLFLOW}
    for name, budget in budgets.items():
        template = rendered.one("Deployment", name)["spec"]["template"]
        assert selects(budget["spec"]["selector"], template["metadata"]["labels"]), name
        assert budget["spec"]["maxUnavailable"] == 1
    # Only the API's own pods: the selector is not satisfied by MLflow's.
    mlflow = rendered.one("Deployment", MLFLOW)["spec"]["template"]["metadata"]["labels"]
    assert not selects(budgets[API]["spec"]["selector"], mlflow)


def test_the_ray_head_budget_is_opt_in_and_selects_the_head() -> None:
    rendered = render({"podDisruptionBudget": {"enabled": True, "rayHead": True}})
    budget = rendered.one("PodDisruptionBudget", f"{RAY}-head")
    head = cluster_of(rendered)["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]

    assert budget["spec"]["maxUnavailable"] == 0
    assert selects(budget["spec"]["selector"], head)
    assert render({"podDisruptionBudget": {"enabled": False}}).of_kind("PodDisruptionBudget") == []


def test_the_service_monitor_scrapes_the_api_metrics_when_asked() -> None:
    assert render_profile("default").of_kind("ServiceMonitor") == []
    monitor_values = {"enabled": True, "interval": "15s", "labels": {"release": "kps"}}
    rendered = render({"metrics": {"serviceMonitor": monitor_values}})
    (monitor,) = rendered.of_kind("ServiceMonitor")
    service = rendered.one("Service", API)
    (endpoint,) = monitor["spec"]["endpoints"]

    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    mlflow = rendered.one("Service", MLFLOW)["metadata"]["labels"]
    assert not selects(monitor["spec"]["selector"], mlflow)
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")


def test_schema_refuses_a_scrape_interval_prometheus_cannot_parse() -> None:
    refused({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval")


# --- the chart README names every value ------------------------------------------------------


def leaf_values(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml's settings: a non-empty mapping is a section, anything else
    (scalars, lists, {}) a value."""
    found = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found.extend(leaf_values(value, path + "."))
        else:
            found.append(path)
    return found


FREE_FORM = {"resources", "rayStartParams", "podSecurityContext", "containerSecurityContext"}
"""Mappings of Kubernetes' or Ray's own fields: the README names the mapping, not its keys."""


def documented_as(path: str) -> str:
    parts = path.split(".")
    for at, part in enumerate(parts):
        if part in FREE_FORM:
            return ".".join(parts[: at + 1])
    return path


def test_the_chart_readme_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    expected = {documented_as(path) for path in leaf_values(values)}

    assert sorted(expected - documented) == []
    assert sorted(documented - expected) == []  # and nothing that is not a value


def test_every_pod_still_runs_unprivileged_with_the_day_two_containers() -> None:
    for manifest in render_profile("default").manifests:
        for _, pod in pod_specs(manifest):
            for container in containers(pod):
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
