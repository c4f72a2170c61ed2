"""The rendered chart's pods as processes on this machine, for test_chart_processes.py.

Each pod runs in a network namespace of its own on one bridge (``tests.cluster.netns``), so
it has its own address and binds the ports its manifest says (``0.0.0.0:5000`` and so on)
without meeting another pod or another test. In each pod's mount namespace a hosts file of
the release's Services stands in for cluster DNS: ``demo-dualtune-mlflow``, ``…-mlflow.ml``,
``…-mlflow.ml.svc`` and ``…-mlflow.ml.svc.cluster.local`` resolve to the address of the pod
the Service's selector picks (none: the name does not resolve, as a Service with no
endpoints does not answer). A Service whose port differs from its pod's port would need
kube-proxy's translation, which is not emulated: it is refused instead.

Environment and command lines are the rendered ones, resolved as the kubelet does:
``value``, ``valueFrom`` (``secretKeyRef`` against the rendered Secrets' ``data`` or
``stringData``, ``configMapKeyRef``, ``fieldRef`` ``metadata.name``), then ``$(VAR)`` in
later values and in the command. The only rewrite is of paths: a path under a container's
``volumeMounts`` becomes the volume's directory here (an emptyDir per pod, a PVC per claim
shared by every pod that mounts it, a ConfigMap's files written out).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster.netns import Network, Node
from tests.deploy.chart import NAMESPACE, Rendered

VENV_BIN = Path(sys.executable).parent
IMAGE_ENV = {
    # What the images' Dockerfiles put in every container's environment (ENV, and the PATH
    # where their Python and its console scripts live: here the venv's). Trusted, not tested.
    "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "LANG": "C.UTF-8",
    # Part of the DNS stand-in, not of the images: gRPC's own resolver (c-ares) asks DNS
    # servers and skips /etc/hosts, where the Services' names are here; the system's does not.
    "GRPC_DNS_RESOLVER": "native",
}
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)``: replaced where VAR is defined, kept as is where not; ``$$``
    is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(one, text)


def secret_value(rendered: Rendered, name: str, key: str) -> str:
    (secret,) = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == name] or [None]
    assert secret is not None, f"a secretKeyRef names Secret {name}, which is not rendered"
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    assert key in secret.get("data", {}), f"Secret {name} has no key {key}"
    return base64.b64decode(secret["data"][key]).decode()


def config_value(rendered: Rendered, name: str, key: str) -> str:
    config = rendered.one("ConfigMap", name)
    assert key in config.get("data", {}), f"ConfigMap {name} has no key {key}"
    return str(config["data"][key])


def container_env(rendered: Rendered, container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it (without the image's own)."""
    assert "envFrom" not in container, "envFrom: not emulated; resolve it here first"
    env: dict[str, str] = {}
    for var in container.get("env", []):
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var["value"]), env)
            continue
        source = var["valueFrom"]
        if ref := source.get("secretKeyRef"):
            env[name] = secret_value(rendered, ref["name"], ref["key"])
        elif ref := source.get("configMapKeyRef"):
            env[name] = config_value(rendered, ref["name"], ref["key"])
        elif ref := source.get("fieldRef"):
            assert ref["fieldPath"] == "metadata.name", f"fieldRef {ref}: not emulated"
            env[name] = pod_name
        else:
            raise AssertionError(f"{name}: valueFrom {source} is not emulated")
    return env


@dataclass
class Pod:
    """One replica of a workload: its namespace, its labels, its pod spec, its volumes."""

    name: str
    node: Node
    labels: dict[str, str]
    spec: dict[str, Any]
    volumes: dict[str, Path] = field(default_factory=dict)
    """Volume name → its directory here."""

    @property
    def ip(self) -> str:
        return self.node.ip

    def container(self, name: str) -> dict[str, Any]:
        every = [*self.spec.get("initContainers", []), *self.spec["containers"]]
        (found,) = [c for c in every if c["name"] == name]
        return found

    def mounts(self, container: dict[str, Any]) -> list[tuple[str, Path]]:
        """(mountPath, directory here), the longest paths first."""
        found = []
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in self.volumes, f"{self.name}: no volume {mount['name']}"
            found.append((mount["mountPath"].rstrip("/"), self.volumes[mount["name"]]))
        return sorted(found, key=lambda m: -len(m[0]))

    def port(self, container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int):
            return port
        (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
        return int(number)


def host_paths(text: str, mounts: list[tuple[str, Path]]) -> str:
    """``text`` with each path under a mount (at the start, or after ``=``, ``,`` or a
    space) moved to the mount's directory here, in one pass (the directories are paths
    under ``/tmp`` themselves), the longest mount path first."""
    if not mounts:
        return text
    directories = dict(sorted(mounts, key=lambda m: -len(m[0])))
    pattern = re.compile(
        rf"(^|[=, ])({'|'.join(re.escape(path) for path in directories)})(?=/|$|[, ])"
    )
    return pattern.sub(lambda m: f"{m.group(1)}{directories[m.group(2)]}", text)


def _has_port(container: dict[str, Any], port: int | str) -> bool:
    return isinstance(port, int) or any(p["name"] == port for p in container.get("ports", []))


class Cluster:
    """The release's pods in namespaces on one bridge, its Services in their hosts files."""

    def __init__(self, rendered: Rendered, net: Network, work: Path) -> None:
        self.rendered = rendered
        self.net = net
        self.work = work
        self.pods: dict[str, Pod] = {}
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.hosts = work / "hosts"
        (work / "logs").mkdir()

    # Pods and their volumes

    def add_pod(
        self, name: str, role: str, template: dict[str, Any], claims: Mapping[str, Path] = {}
    ) -> Pod:
        pod = Pod(
            name,
            self.net.add_node(role, self.work),
            template["metadata"]["labels"],
            template["spec"],
        )
        for volume in pod.spec.get("volumes", []):
            pod.volumes[volume["name"]] = self._volume(pod, volume)
        pod.volumes.update(claims)
        self.pods[name] = pod
        return pod

    def claim(self, name: str) -> Path:
        path = self.work / "pvc" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _volume(self, pod: Pod, volume: dict[str, Any]) -> Path:
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert claim in self.rendered.names("PersistentVolumeClaim"), (
                f"{pod.name} mounts PVC {claim}, which is not rendered"
            )
            return self.claim(volume["persistentVolumeClaim"]["claimName"])
        path = self.work / pod.name / volume["name"]
        path.mkdir(parents=True)
        if "emptyDir" in volume:
            path.chmod(0o1777)  # a pod's /tmp, /dev/shm: any of its users writes there
        elif "configMap" in volume:
            config = self.rendered.one("ConfigMap", volume["configMap"]["name"])
            for key, text in config.get("data", {}).items():
                (path / key).write_text(text)
        else:
            raise AssertionError(f"{pod.name}: volume {volume} is not emulated")
        return path

    # Cluster DNS

    def write_hosts(self, extra: Mapping[str, Pod] = {}) -> None:
        """Every rendered Service (and ``extra``: Services an operator makes) under its
        four names, at the address of the one pod its selector picks."""
        lines = ["127.0.0.1 localhost"]
        services: dict[str, Pod] = dict(extra)
        for service in self.rendered.of_kind("Service"):
            selector = service["spec"]["selector"]
            picked = [p for p in self.pods.values() if selector.items() <= p.labels.items()]
            assert len(picked) <= 1, f"Service {service['metadata']['name']} picks {picked}"
            if not picked:
                continue
            (pod,) = picked
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                served = {
                    pod.port(c, target) for c in pod.spec["containers"] if _has_port(c, target)
                }
                assert served == {port["port"]}, (
                    f"Service {service['metadata']['name']} port {port['port']} goes to "
                    f"{target} of {pod.name} ({served or 'no such port'}): kube-proxy's "
                    "translation of one port to another is not emulated"
                )
            services[service["metadata"]["name"]] = pod
        for name, pod in services.items():
            names = [
                name,
                f"{name}.{NAMESPACE}",
                f"{name}.{NAMESPACE}.svc",
                f"{name}.{NAMESPACE}.svc.cluster.local",
            ]
            lines.append(f"{pod.ip} {' '.join(names)}")
        self.hosts.write_text("\n".join(lines) + "\n")

    # Processes

    def argv(self, pod: Pod, command: list[str], user: str | None = None) -> list[str]:
        """``command`` in ``pod``'s network namespace, with the hosts file as /etc/hosts in a
        mount namespace of its own (``ip netns exec`` makes one), as ``user`` if given."""
        as_user = ["runuser", "-u", user, "--"] if user else []
        return [
            "ip", "netns", "exec", pod.node.name,
            "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(self.hosts),
            *as_user, *command,
        ]  # fmt: skip

    def run(
        self,
        pod: Pod,
        command: list[str],
        env: Mapping[str, str],
        label: str,
        *,
        user: str | None = None,
        timeout: float = 180,
    ) -> str:
        log = self.work / "logs" / f"{label}.log"
        done = subprocess.run(
            self.argv(pod, command, user), env=dict(env), capture_output=True, text=True,
            timeout=timeout, cwd=self.work,
        )  # fmt: skip
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (
            f"{label} ({command}) exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
        return done.stdout

    def start(
        self,
        pod: Pod,
        command: list[str],
        env: Mapping[str, str],
        label: str,
        *,
        user: str | None = None,
    ) -> subprocess.Popen[bytes]:
        with (self.work / "logs" / f"{label}.log").open("ab") as log:
            process = subprocess.Popen(
                self.argv(pod, command, user), env=dict(env), stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append((label, process))
        return process

    def log_tail(self, label: str, chars: int = 4000) -> str:
        path = self.work / "logs" / f"{label}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def wait_http(
        self,
        pod: Pod,
        container: dict[str, Any],
        probe: dict[str, Any],
        label: str,
        timeout: float,
    ) -> None:
        """A ``httpGet`` probe, from outside the pod as the kubelet sends it."""
        get = probe["httpGet"]
        url = f"http://{pod.ip}:{pod.port(container, get['port'])}{get['path']}"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, process in self.processes:
                assert process.poll() is None, (
                    f"{name} exited {process.returncode}:\n{self.log_tail(name)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                answer = httpx.get(url, timeout=5)
                if 200 <= answer.status_code < 400:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.5)
        raise AssertionError(f"{label}: {url} did not pass ({last}):\n{self.log_tail(label)}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process's group, SIGKILL what is left after ``grace_s`` in all;
        ``Network.teardown`` then kills anything still in a namespace and removes them."""
        for _, process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def bridge() -> contextlib.AbstractContextManager[Network]:
    """A bridge and subnet of this test's own (``dc`` names, 10.78.N: not the multi-node
    test's ``dt``/10.77.N), removed with every namespace on it however the test ends."""
    from tests.cluster.netns import network

    return network("dc", 78)
