"""What the chart deploys: non-root pods with resources, the service probed on /healthz and
/readyz and wired to Postgres, Ray and MLflow by names that exist, the migrations as a hook,
Postgres bundled or external, MLflow on Postgres with proxied artifacts, and a RayCluster whose
GPU workers autoscale from zero with token auth."""

from __future__ import annotations

import fnmatch
import re
from typing import Any, cast
from urllib.parse import urlsplit

import pytest

from dualtune.service.settings import Settings
from tests.deploy.chart import (
    NAMESPACE,
    PROFILES,
    Rendered,
    containers,
    env_of,
    pod_specs,
    render,
    render_profile,
)

API = "demo-dualtune"
MLFLOW = "demo-dualtune-mlflow"
POSTGRES = "demo-dualtune-postgresql"
RAY = "demo-dualtune-ray"


def api_container(rendered: Rendered) -> dict[str, Any]:
    deployment = rendered.one("Deployment", API)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], container)


def mlflow_container(rendered: Rendered) -> dict[str, Any]:
    deployment = rendered.one("Deployment", MLFLOW)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], container)


def flags(container: dict[str, Any]) -> dict[str, str]:
    """`--name=value` and bare `--name` arguments of a command line."""
    found = {}
    for arg in container["command"]:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            found[name] = value
    return found


def secret_refs(rendered: Rendered) -> set[tuple[str, str]]:
    refs = set()
    for manifest in rendered.manifests:
        for _, pod in pod_specs(manifest):
            for container in containers(pod):
                for var in container.get("env", []):
                    if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                        refs.add((ref["name"], ref["key"]))
    return refs


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_runs_as_non_root_without_privileges(profile: str) -> None:
    for manifest in render_profile(profile).manifests:
        for name, pod in pod_specs(manifest):
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] > 0, name
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            for container in containers(pod):
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, container["name"]
                assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_container_has_requests_and_limits(profile: str) -> None:
    rendered = render_profile(profile)
    for manifest in rendered.manifests:
        for _, pod in pod_specs(manifest):
            for container in containers(pod):
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container
                assert {"cpu", "memory"} <= set(container["resources"]["limits"]), container
    (cluster,) = rendered.of_kind("RayCluster")
    assert {"cpu", "memory"} <= set(cluster["spec"]["autoscalerOptions"]["resources"]["limits"])


def test_service_is_probed_on_healthz_and_readyz() -> None:
    container = api_container(render_profile("default"))

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["command"][:2] == ["dualtune", "serve"]


def test_the_service_listens_on_every_interface_of_its_pod() -> None:
    """`dualtune serve` listens on 127.0.0.1 unless told otherwise: the probes and the
    Service reach the pod's own address."""
    command = api_container(render_profile("default"))["command"]

    assert command[command.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("profile", PROFILES)
def test_service_settings_are_real_settings(profile: str) -> None:
    rendered = render_profile(profile)
    deployment = rendered.one("Deployment", API)
    for container in containers(deployment["spec"]["template"]["spec"]):
        for name in env_of(container):
            if name.startswith("DUALTUNE_"):
                assert name.removeprefix("DUALTUNE_").lower() in Settings.model_fields, name


@pytest.mark.parametrize("profile", PROFILES)
def test_service_reaches_ray_mlflow_and_itself_by_names_the_chart_creates(profile: str) -> None:
    rendered = render_profile(profile)
    env = env_of(api_container(rendered))
    in_cluster = f".{NAMESPACE}.svc"

    assert env["DUALTUNE_LAUNCHER"]["value"] == "ray"
    # KubeRay names a cluster's head Service <cluster>-head-svc; the Jobs API is on 8265.
    assert env["DUALTUNE_RAY_ADDRESS"]["value"] == f"http://{RAY}-head-svc{in_cluster}:8265"
    assert rendered.names("RayCluster") == {RAY}
    tracking = urlsplit(env["DUALTUNE_MLFLOW_TRACKING_URI"]["value"])
    assert tracking.hostname == f"{MLFLOW}{in_cluster}"
    assert MLFLOW in rendered.names("Service")
    service_url = urlsplit(env["DUALTUNE_SERVICE_URL"]["value"])
    assert service_url.hostname == f"{API}{in_cluster}"
    assert service_url.port == rendered.one("Service", API)["spec"]["ports"][0]["port"]
    # Drivers keep Tune state on the volume every Ray pod mounts.
    (cluster,) = rendered.of_kind("RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    mounts = [m["mountPath"] for m in head["volumeMounts"]]
    assert any(env["DUALTUNE_DRIVER_DATA_DIR"]["value"].startswith(m + "/") for m in mounts)


@pytest.mark.parametrize("profile", PROFILES)
def test_mlflow_accepts_the_host_header_drivers_send(profile: str) -> None:
    rendered = render_profile(profile)
    allowed = flags(mlflow_container(rendered))["--allowed-hosts"].split(",")
    tracking = urlsplit(env_of(api_container(rendered))["DUALTUNE_MLFLOW_TRACKING_URI"]["value"])
    ui = urlsplit(env_of(api_container(rendered))["DUALTUNE_MLFLOW_UI_URL"]["value"])

    # MLflow 3 answers 403 to a Host header outside --allowed-hosts (fnmatch patterns).
    for host in [tracking.netloc, ui.netloc, "localhost:5000"]:
        assert any(fnmatch.fnmatch(host, pattern) for pattern in allowed), host
    assert not any(fnmatch.fnmatch("evil.example.org", pattern) for pattern in allowed)


def test_mlflow_serves_artifacts_from_a_volume_with_a_postgres_backend() -> None:
    rendered = render_profile("default")
    container = mlflow_container(rendered)
    args = flags(container)

    assert args["--backend-store-uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    backend = env_of(container)["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert (
        backend
        == f"postgresql://dualtune:$(POSTGRES_PASSWORD)@{POSTGRES}.{NAMESPACE}.svc:5432/mlflow"
    )
    assert "--serve-artifacts" in args
    assert args["--artifacts-destination"] == "/mlflow/artifacts"
    claim = rendered.one("Deployment", MLFLOW)["spec"]["template"]["spec"]["volumes"][1]
    assert claim["persistentVolumeClaim"]["claimName"] in rendered.names("PersistentVolumeClaim")
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_mlflow_on_s3_takes_its_keys_from_a_secret() -> None:
    rendered = render_profile("s3-artifacts-values")
    container = mlflow_container(rendered)
    env = env_of(container)

    assert flags(container)["--artifacts-destination"] == "s3://dualtune-mlflow/runs"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://minio.storage.svc:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "dualtune-s3"
    assert "volumeMounts" not in container or all(
        m["mountPath"] != "/mlflow" for m in container["volumeMounts"]
    )
    assert not any("mlflow" in name for name in rendered.names("PersistentVolumeClaim"))


@pytest.mark.parametrize("profile", PROFILES)
def test_environment_references_are_defined_before_use(profile: str) -> None:
    # Kubernetes expands $(VAR) only from variables listed earlier in the same container.
    for manifest in render_profile(profile).manifests:
        for _, pod in pod_specs(manifest):
            for container in containers(pod):
                seen: set[str] = set()
                for var in container.get("env", []):
                    for used in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                        assert used in seen, (container["name"], var["name"], used)
                    seen.add(var["name"])
                for arg in container.get("command", []):
                    for used in re.findall(r"\$\((\w+)\)", arg):
                        assert used in seen, (container["name"], arg)


def test_bundled_postgres_is_a_statefulset_with_a_volume_and_a_generated_password() -> None:
    rendered = render_profile("default")
    statefulset = rendered.one("StatefulSet", POSTGRES)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    secret = rendered.one("Secret", POSTGRES)

    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert len(secret["data"]["password"]) >= 32
    database_url = env_of(api_container(rendered))["DUALTUNE_DATABASE_URL"]["value"]
    assert database_url.startswith(f"postgresql://dualtune:$(POSTGRES_PASSWORD)@{POSTGRES}.")
    init = rendered.one("ConfigMap", f"{POSTGRES}-init")
    assert "CREATE DATABASE mlflow" in next(iter(init["data"].values()))


def test_external_postgres_urls_come_from_the_secret_and_nothing_is_bundled() -> None:
    rendered = render_profile("external-postgres-values")
    env = env_of(api_container(rendered))

    assert rendered.of_kind("StatefulSet") == []
    assert env["DUALTUNE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "dualtune-database",
        "key": "database-url",
    }
    backend = env_of(mlflow_container(rendered))["MLFLOW_BACKEND_STORE_URI"]
    assert backend["valueFrom"]["secretKeyRef"]["key"] == "mlflow-database-url"


def init_containers(rendered: Rendered) -> dict[str, dict[str, Any]]:
    pod = rendered.one("Deployment", API)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod.get("initContainers", [])}


def hooks(rendered: Rendered) -> list[str]:
    return [
        m["metadata"].get("annotations", {}).get("helm.sh/hook", "")
        for m in rendered.manifests
        if m["metadata"].get("annotations", {}).get("helm.sh/hook")
    ]


def test_external_database_is_migrated_by_a_pre_install_pre_upgrade_hook_job() -> None:
    rendered = render_profile("external-postgres-values")
    (job,) = rendered.of_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]

    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hooks(rendered) == ["pre-install,pre-upgrade"]
    assert container["command"] == ["dualtune", "db", "upgrade"]
    assert container["image"] == api_container(rendered)["image"]
    assert (
        env_of(container)["DUALTUNE_DATABASE_URL"]
        == env_of(api_container(rendered))["DUALTUNE_DATABASE_URL"]
    )
    # The pods only wait for the schema the hook migrated; they do not migrate themselves.
    assert set(init_containers(rendered)) == {"wait-for-schema"}


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "external-postgres-values"])
def test_bundled_postgres_is_migrated_by_the_service_pods_without_hooks(profile: str) -> None:
    # The install creates the bundled database, so no pre-install hook can migrate it, and a
    # post-install hook would deadlock `helm install --wait` (Helm waits for the pods first).
    rendered = render_profile(profile)
    inits = init_containers(rendered)

    assert rendered.of_kind("Job") == []
    assert not any("post-install" in events for events in hooks(rendered))
    assert set(inits) == {"migrate"}
    assert "-c migrate" in rendered.notes
    assert "do not pass --wait" not in rendered.notes
    migrate = inits["migrate"]
    script = migrate["command"][-1]
    assert migrate["command"][:2] == ["python", "-c"]
    assert '["dualtune", "db", "upgrade"]' in script
    assert "pg_advisory_lock(" in script
    assert migrate["image"] == api_container(rendered)["image"]
    assert (
        env_of(migrate)["DUALTUNE_DATABASE_URL"]
        == env_of(api_container(rendered))["DUALTUNE_DATABASE_URL"]
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_every_secret_the_pods_read_is_rendered_or_named_in_values(profile: str) -> None:
    rendered = render_profile(profile)
    rendered_secrets = rendered.names("Secret")
    user_secrets = {"dualtune-database", "dualtune-s3", "my-ray-token", "my-postgres-password"}

    for name, _ in secret_refs(rendered):
        assert name in rendered_secrets | user_secrets, name


def test_ingress_routes_the_api_and_the_mlflow_ui() -> None:
    rendered = render_profile("ingress-on-values")
    backends = {
        rule["host"]: rule["http"]["paths"][0]["backend"]["service"]["name"]
        for ingress in rendered.of_kind("Ingress")
        for rule in ingress["spec"]["rules"]
    }

    assert backends == {"dualtune.example.com": API, "mlflow.example.com": MLFLOW}
    assert env_of(api_container(rendered))["DUALTUNE_MLFLOW_UI_URL"]["value"] == (
        "https://mlflow.example.com"
    )
    assert "https://dualtune.example.com" in rendered.notes
    assert "https://mlflow.example.com" in rendered.notes


def test_notes_tell_how_to_reach_the_api_and_the_mlflow_ui() -> None:
    notes = render_profile("default").notes

    assert f"port-forward svc/{API} 8000:8000" in notes
    assert f"port-forward svc/{MLFLOW} 5000:5000" in notes
    assert "dualtune token create --tenant" in notes


class TestRayCluster:
    def cluster(self, profile: str = "default") -> dict[str, Any]:
        (cluster,) = render_profile(profile).of_kind("RayCluster")
        return cluster

    @staticmethod
    def group(cluster: dict[str, Any], name: str) -> dict[str, Any]:
        (group,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == name]
        return group

    def test_gpu_workers_autoscale_from_zero(self) -> None:
        spec = self.cluster()["spec"]
        gpu = self.group(self.cluster(), "gpu")
        (worker,) = gpu["template"]["spec"]["containers"]

        assert spec["enableInTreeAutoscaling"] is True
        assert (gpu["minReplicas"], gpu["replicas"], gpu["maxReplicas"]) == (0, 0, 4)
        # With no GPU pod running, the autoscaler learns what one brings from rayStartParams.
        assert gpu["rayStartParams"]["num-gpus"] == "1"
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert gpu["rayStartParams"]["num-cpus"] == "6"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
            gpu["template"]["spec"]["tolerations"]
        )

    def test_head_runs_drivers_only(self) -> None:
        head = self.cluster()["spec"]["headGroupSpec"]

        assert head["rayStartParams"]["num-cpus"] == "0"
        assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
        (container,) = head["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in container["resources"]["limits"]

    def test_ray_version_is_the_pinned_one(self) -> None:
        assert self.cluster()["spec"]["rayVersion"] == "2.60.0"

    @pytest.mark.parametrize("profile", PROFILES)
    def test_every_ray_container_and_the_service_share_one_token(self, profile: str) -> None:
        rendered = render_profile(profile)
        spec = self.cluster(profile)["spec"]
        ray_containers = [spec["autoscalerOptions"]]
        for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
            ray_containers.extend(group["template"]["spec"]["containers"])
        service_token = env_of(api_container(rendered))["DUALTUNE_RAY_AUTH_TOKEN"]["valueFrom"]

        for container in ray_containers:
            env = env_of(container)
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"] == service_token

    def test_no_gpu_profile_has_a_cpu_group_and_no_gpus(self) -> None:
        spec = self.cluster("no-gpu-values")["spec"]
        (cpu,) = spec["workerGroupSpecs"]
        (worker,) = cpu["template"]["spec"]["containers"]

        assert cpu["groupName"] == "cpu"
        assert (cpu["minReplicas"], cpu["maxReplicas"]) == (1, 6)
        assert cpu["rayStartParams"] == {"num-gpus": "0", "num-cpus": "3"}
        assert "nvidia.com/gpu" not in worker["resources"]["limits"]
        volumes = {v["name"]: v for v in cpu["template"]["spec"]["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "nfs-dualtune"

    def test_extra_gpus_per_worker_reach_limits_and_ray(self) -> None:
        (cluster,) = render({"ray": {"gpuWorkers": {"gpusPerWorker": 4}}}).of_kind("RayCluster")
        gpu = self.group(cluster, "gpu")
        (worker,) = gpu["template"]["spec"]["containers"]

        assert gpu["rayStartParams"]["num-gpus"] == "4"
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 4
