"""The chart's wiring run as processes: the default values rendered once by real Helm, then
Postgres, MLflow, a Ray head and a CPU worker, and the API started on this machine with
exactly the rendered commands, args and environment (Secrets and all), each pod in a
network namespace of its own on one bridge, and a sweep submitted over the REST API runs
to ``succeeded`` with its trials in MLflow. A wrong name, port, key, variable or volume in
the manifests fails here.

How the cluster is stood in for (``tests/deploy/pods.py``):

* **Service DNS**: each pod's ``/etc/hosts`` (in its own mount namespace) maps every rendered
  Service's names (``demo-dualtune-postgresql``, ``….ml``, ``….ml.svc``,
  ``….ml.svc.cluster.local``) to the address of the pod the Service's selector picks, and
  KubeRay's ``demo-dualtune-ray-head-svc`` to the head's. No port is remapped: each pod
  listens on its rendered port on its own address, as in a cluster.
* **Volumes**: paths under a container's ``volumeMounts`` become directories here (an
  emptyDir per pod, one directory per PVC shared by the pods that mount it, a ConfigMap's
  keys as files). ``DUALTUNE_DRIVER_DATA_DIR`` is a path the API hands to the drivers on
  the Ray pods, so it is mapped with the Ray pods' mounts.

Where the test trusts the images or the operators instead (kept few):

* the images' ``ENV`` and Python: this venv on ``PATH`` (``pods.IMAGE_ENV``), and their
  ``HOME`` (``/home/dualtune``) the pod's ``/tmp`` volume where the chart sets none;
* the postgres image's entrypoint, done by hand with Debian's server binaries (which may be
  an older major than the image's): ``initdb`` with ``POSTGRES_USER``/``POSTGRES_PASSWORD``,
  ``host all all all scram-sha-256``, ``listen_addresses='*'``, ``POSTGRES_DB`` created and
  the ``/docker-entrypoint-initdb.d`` files run, then ``postgres`` as the postgres user; its
  socket directory is the ``run`` emptyDir (the image's ``/var/run/postgresql``);
* KubeRay: the ``ray start`` line it writes from ``rayStartParams`` (``--head``/``--address``
  of the head Service, ``--block``, the pod's address), one CPU worker started as the
  autoscaler would start it for CPU trials (no autoscaler runs), Ray's temp dir (``/tmp/ray``
  in the pod) a short directory of the pod's own (Ray's socket paths must stay under 108
  bytes), and ``--disable-usage-stats`` (nothing outside is reachable here);
* the API runs one replica of its two; no NetworkPolicy, read-only root or uid is enforced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dualtune.worker.tracking import NODE_TAG
from tests.cluster.netns import REQUIRE_ENV, unavailable_reason, wait_for_nodes
from tests.deploy.chart import NAMESPACE, Rendered, render
from tests.deploy.pods import IMAGE_ENV, Cluster, Pod, bridge, container_env, expand, host_paths
from tests.ray_jobs import wait_for_job_agent

pytestmark = [
    # Root and network namespaces, as the multi-node test: run by .ci/run's cluster step, not
    # by `make test` (it adds one to three minutes to the serial Ray group).
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.postgres,
    pytest.mark.xdist_group("ray"),
]

RELEASE = "demo-dualtune"
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
SPEC: dict[str, Any] = {
    "name": "chart-processes",
    "task": {"name": "two_moons", "params": {"n_train": 128, "n_val": 64}},
    "constraint": {"kind": "sample_loss"},
    "methods": ["erm"],
    "grid": {"seed": [0, 1]},
    "train": {"epochs": 2, "batch_size": 64},
}


def _skip_unless_possible() -> None:
    reason = unavailable_reason()
    if not PG_BIN:
        reason = "needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)"
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1" or os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"the chart-as-processes test must run in CI, and it cannot: {reason}")
    pytest.skip(f"the chart as processes {reason}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _skip_unless_possible()
    rendered = render({})  # once: its generated password and Ray token are the ones used
    # Not under pytest's tmp dir: the postgres user must reach its data directory.
    work = Path(tempfile.mkdtemp(prefix="dtchart-", dir="/tmp"))
    work.chmod(0o755)
    try:
        with bridge() as net:
            found = Cluster(rendered, net, work)
            try:
                yield found
            finally:
                found.stop()
                shutil.copytree(work / "logs", tmp_path / "logs")  # pytest keeps these
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _env(
    pod: Pod, container: dict[str, Any], rendered: Rendered, *more_mounts: Any
) -> dict[str, str]:
    mounts = [*pod.mounts(container), *more_mounts]
    env = {
        k: host_paths(v, mounts) for k, v in container_env(rendered, container, pod.name).items()
    }
    return {**IMAGE_ENV, "HOME": str(pod.volumes.get("tmp", pod.node.temp_dir)), **env}


def _command(container: dict[str, Any], env: dict[str, str], pod: Pod) -> list[str]:
    line = [*container.get("command", []), *container.get("args", [])]
    return [host_paths(expand(arg, env), pod.mounts(container)) for arg in line]


def _pods(cluster: Cluster) -> dict[str, Pod]:
    """Every pod the test runs, in its namespace, and the hosts file of the Services: all
    before any process starts, since the first ones already reach others by name."""
    rendered = cluster.rendered
    sts = rendered.one("StatefulSet", f"{RELEASE}-postgresql")
    pg_name = f"{sts['metadata']['name']}-0"
    claims = {
        t["metadata"]["name"]: cluster.claim(f"{t['metadata']['name']}-{pg_name}")
        for t in sts["spec"]["volumeClaimTemplates"]
    }
    (ray,) = rendered.of_kind("RayCluster")
    ray_name = ray["metadata"]["name"]
    (cpu_group,) = [g for g in ray["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu"]
    pods = {
        "postgresql": cluster.add_pod(pg_name, "pg", sts["spec"]["template"], claims),
        "mlflow": cluster.add_pod(
            f"{RELEASE}-mlflow-0", "mlf", _template(rendered, f"{RELEASE}-mlflow")
        ),
        "api": cluster.add_pod(f"{RELEASE}-0", "api", _template(rendered, RELEASE)),
        "head": cluster.add_pod(
            f"{ray_name}-head", "head", ray["spec"]["headGroupSpec"]["template"]
        ),
        "cpu": cluster.add_pod(f"{ray_name}-cpu-0", "cpu", cpu_group["template"]),
    }
    cluster.write_hosts({f"{ray_name}-head-svc": pods["head"]})  # KubeRay makes this one
    return pods


def _template(rendered: Rendered, deployment: str) -> dict[str, Any]:
    template: dict[str, Any] = rendered.one("Deployment", deployment)["spec"]["template"]
    return template


def _postgres(cluster: Cluster, pod: Pod) -> None:
    """The bundled Postgres, set up as the postgres image's entrypoint does."""
    (container,) = pod.spec["containers"]
    env = _env(pod, container, cluster.rendered)
    bin_ = PG_BIN[-1]
    env["PATH"] = f"{bin_}:{env['PATH']}"  # the image's PATH has pg_isready, psql, ...
    data = Path(env["PGDATA"])
    sockets = pod.volumes["run"]
    for path in (data.parent, sockets):
        shutil.chown(path, "postgres", "postgres")
    password = cluster.work / "pg-password"
    password.write_text(env["POSTGRES_PASSWORD"] + "\n")
    shutil.chown(password, "postgres", "postgres")
    user, database = env["POSTGRES_USER"], env["POSTGRES_DB"]

    def as_postgres(label: str, *command: str) -> None:
        cluster.run(pod, list(command), env, label, user="postgres")

    as_postgres("pg-initdb", f"{bin_}/initdb", "-D", str(data), f"--username={user}",
                f"--pwfile={password}")  # fmt: skip
    password.unlink()
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all all scram-sha-256\n")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '*'\nunix_socket_directories = '{sockets}'\n")
    psql = [f"{bin_}/psql", "-h", str(sockets), "-U", user, "-v", "ON_ERROR_STOP=1"]
    as_postgres("pg-init-start", f"{bin_}/pg_ctl", "-D", str(data), "-o",
                "-c listen_addresses=''", "-l", str(pod.volumes["tmp"] / "init.log"),
                "-w", "start")  # fmt: skip
    as_postgres("pg-createdb", *psql, "-d", "postgres", "-c", f'CREATE DATABASE "{database}"')
    (init_dir,) = [d for path, d in pod.mounts(container) if path == "/docker-entrypoint-initdb.d"]
    for script in sorted(init_dir.glob("*.sql")):
        as_postgres(f"pg-{script.stem}", *psql, "-d", database, "-f", str(script))
    as_postgres("pg-init-stop", f"{bin_}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    cluster.start(pod, [f"{bin_}/postgres", "-D", str(data)], env, "postgresql", user="postgres")
    probe = container["readinessProbe"]["exec"]["command"]
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.run(pod, probe, env, "pg-ready", timeout=10)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _serve(
    cluster: Cluster, pod: Pod, label: str, *more_mounts: tuple[str, Path]
) -> dict[str, str]:
    """A Deployment's pod: its init containers run to the end in order, then its container
    started and waited for until its startup and readiness probes pass. Its environment."""
    for init in pod.spec.get("initContainers", []):
        env = _env(pod, init, cluster.rendered, *more_mounts)
        cluster.run(pod, _command(init, env, pod), env, f"{label}-{init['name']}")
    (container,) = pod.spec["containers"]
    env = _env(pod, container, cluster.rendered, *more_mounts)
    cluster.start(pod, _command(container, env, pod), env, label)
    for probe in ("startupProbe", "readinessProbe"):
        spec = container[probe]
        budget = min(180.0, spec.get("periodSeconds", 10) * spec.get("failureThreshold", 3))
        cluster.wait_http(pod, container, spec, label, budget)
    return env


def _ray(cluster: Cluster, head: Pod, worker: Pod) -> tuple[str, str]:
    """The RayCluster's head and one pod of its CPU group, started with the ``ray start``
    lines KubeRay writes; the dashboard's address and the Ray token."""
    (ray,) = cluster.rendered.of_kind("RayCluster")
    head_group = ray["spec"]["headGroupSpec"]
    (cpu_group,) = [g for g in ray["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu"]
    (head_container,) = head.spec["containers"]
    (worker_container,) = worker.spec["containers"]
    head_env = _env(head, head_container, cluster.rendered)
    worker_env = _env(worker, worker_container, cluster.rendered)

    def ray_start(pod: Pod, params: dict[str, str], *role: str) -> list[str]:
        return [
            "ray", "start", *role, "--block", f"--node-ip-address={pod.ip}",
            f"--temp-dir={pod.node.temp_dir}", "--disable-usage-stats",
            *(f"--{key}={value}" for key, value in params.items()),
        ]  # fmt: skip

    gcs = head.port(head_container, "gcs")
    head_service = f"{ray['metadata']['name']}-head-svc.{NAMESPACE}.svc.cluster.local"
    cluster.start(head, ray_start(head, head_group["rayStartParams"], "--head"), head_env,
                  "ray-head")  # fmt: skip
    cluster.start(worker, ray_start(worker, cpu_group["rayStartParams"],
                  f"--address={head_service}:{gcs}"), worker_env, "ray-cpu")  # fmt: skip
    token = head_env["RAY_AUTH_TOKEN"]
    dashboard = f"http://{head.ip}:{head.port(head_container, 'dashboard')}"
    return dashboard, token


def test_a_sweep_runs_to_the_end_through_the_rendered_wiring(cluster: Cluster) -> None:
    started = time.monotonic()
    pods = _pods(cluster)
    # As in a cluster, Ray comes up while Postgres and MLflow do.
    dashboard, ray_token = _ray(cluster, pods["head"], pods["cpu"])
    _postgres(cluster, pods["postgresql"])
    _serve(cluster, pods["mlflow"], "mlflow")
    wait_for_nodes(dashboard, ray_token, {pods["head"].ip, pods["cpu"].ip})
    wait_for_job_agent(dashboard, ray_token)
    # DUALTUNE_DRIVER_DATA_DIR is a path on the Ray pods (the drivers'), not the API's own:
    # their shared volume's mounts map it.
    (head_container,) = pods["head"].spec["containers"]
    ray_shared = [
        (path, d) for path, d in pods["head"].mounts(head_container)
        if d.parent == cluster.work / "pvc"
    ]  # fmt: skip
    api_env = _serve(cluster, pods["api"], "api", *ray_shared)
    up = time.monotonic() - started

    # A tenant's token, as an operator makes one: `dualtune token create` in the API pod.
    printed = cluster.run(pods["api"], ["dualtune", "token", "create", "--tenant", "chart"],
                          api_env, "token-create")  # fmt: skip
    token = printed.strip().splitlines()[-1].strip()
    api = httpx.Client(
        base_url=f"http://{pods['api'].ip}:{api_env['DUALTUNE_PORT']}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    with api:
        created = api.post("/sweeps", json={"spec": SPEC})
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        deadline = time.monotonic() + 240
        while (sweep := api.get(f"/sweeps/{sweep_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled",
        ):  # fmt: skip
            assert time.monotonic() < deadline, (
                f"the sweep did not end: {sweep}\n{cluster.log_tail('api')}"
            )
            time.sleep(1)
        assert sweep["status"] == "succeeded", (sweep, cluster.log_tail("api"))
        assert sweep["trial_counts"] == {"succeeded": 2}, sweep
        trials = api.get(f"/sweeps/{sweep_id}/trials").json()["items"]
    assert {t["status"] for t in trials} == {"succeeded"}

    # Each trial is a finished MLflow run, read from the server as the pods reach it (its
    # in-cluster name in the Host header: the server's --allowed-hosts are the rendered ones).
    mlflow_pod = pods["mlflow"]
    (mlflow_container,) = mlflow_pod.spec["containers"]
    port = mlflow_pod.port(mlflow_container, "http")
    in_cluster = f"{RELEASE}-mlflow.{NAMESPACE}.svc:{port}"
    for trial in trials:
        answer = httpx.get(
            f"http://{mlflow_pod.ip}:{port}/api/2.0/mlflow/runs/get",
            params={"run_id": trial["mlflow_run_id"]},
            headers={"Host": in_cluster},
            timeout=30,
        )
        assert answer.status_code == 200, (
            f"trial {trial['trial_id']}'s run {trial['mlflow_run_id']} is not in the chart's "
            f"MLflow (did its driver log elsewhere?): {answer.text}"
        )
        run = answer.json()["run"]
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        assert run["info"]["status"] == "FINISHED", run["info"]
        assert tags["dualtune.trial_id"] == trial["trial_id"]
        assert tags["dualtune.sweep_id"] == sweep_id
        assert tags[NODE_TAG] == pods["cpu"].ip  # on the CPU group: the head has num-cpus 0
    print(f"\nthe rendered stack was up after {up:.0f} s; the sweep ended after "
          f"{time.monotonic() - started:.0f} s")  # fmt: skip
