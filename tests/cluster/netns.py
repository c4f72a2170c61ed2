"""A Ray cluster of several nodes on one machine: each node in a network namespace of its
own, joined by veth pairs to one bridge in the root namespace (where the test, the service
and MLflow's files live), as pods on one network. Every node has its own address, its own
ports and its own Ray temp dir; they share the filesystem, which stands in for the chart's
RWX volume (Tune's storage, the MLflow store).

Root is needed (``ip netns``, ``ip link``). ``skip_unless_possible`` skips a test where it
is not, and fails it in CI (``CI=true``, or ``DUALTUNE_REQUIRE_CLUSTER=1`` as ``.ci/run``
sets): there the test must run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REQUIRE_ENV = "DUALTUNE_REQUIRE_CLUSTER"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
FAST_NODE_DEATH = {
    # A node whose processes are all killed is declared dead after period × threshold
    # (defaults 3 s × 5 plus slack); the test waits for that, so keep it short.
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, a bridge)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"dtprobe{os.getpid() % 100000}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def skip_unless_possible() -> None:
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1" or os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"the multi-node Ray test must run in CI, and it cannot: {reason}")
    pytest.skip(f"multi-node Ray on one machine {reason}")


def ray_executable() -> str:
    ray = Path(sys.executable).with_name("ray")
    return str(ray) if ray.exists() else (shutil.which("ray") or "ray")


@dataclass
class Node:
    name: str
    """The network namespace's name (also the node's label in assertions)."""
    ip: str
    temp_dir: str
    log: Path

    def pids(self) -> list[int]:
        out = _run("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill(self) -> list[int]:
        """SIGKILL every process in the namespace: the node's raylet, object store, agents
        and workers at once, as a pod or machine lost."""
        killed = self.pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while self.pids() and time.monotonic() < deadline:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        return killed


@dataclass
class Network:
    """A bridge ``br`` with ``gateway`` (the root namespace's address on it) and the
    namespaces attached to it."""

    prefix: str
    subnet: str
    """The first three octets: ``10.77.N``."""
    bridge: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def add_node(self, role: str, work_dir: Path) -> Node:
        index = len(self.nodes) + 2
        name = f"{self.prefix}{role}"
        ip = f"{self.subnet}.{index}"
        outside, inside = f"{self.prefix}{role}o", f"{self.prefix}{role}i"
        _run("ip", "netns", "add", name)
        node = Node(
            name,
            ip,
            tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"),  # Ray's socket paths are short
            work_dir / f"{role}.log",
        )
        self.nodes.append(node)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", name)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "-n", name, "addr", "add", f"{ip}/24", "dev", inside)
        _run("ip", "-n", name, "link", "set", inside, "up")
        _run("ip", "-n", name, "route", "add", "default", "via", self.gateway)
        return node

    def teardown(self) -> None:
        for node in self.nodes:
            node.kill()
            _run("ip", "netns", "del", node.name, check=False)  # takes its veth pair along
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        _run("ip", "link", "del", self.bridge, check=False)


@dataclass
class Cluster:
    """A Ray head and its workers, each a ``Node`` on ``net``, token auth on."""

    net: Network
    head: Node
    workers: list[Node]
    token: str
    shared: Path
    """A directory every node sees (Tune's storage, MLflow's store): the chart's RWX volume."""

    @property
    def dashboard(self) -> str:
        return f"http://{self.head.ip}:{DASHBOARD_PORT}"


def _remove_leftovers(net: Network) -> None:
    """What a killed run of the same pid (modulo 10 000) left: its namespaces, its bridge."""
    listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.strip()):
        if name.startswith(net.prefix):
            for pid in Node(name, "", "", Path()).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _run("ip", "netns", "del", name, check=False)
    _run("ip", "link", "del", net.bridge, check=False)


@contextlib.contextmanager
def network(letters: str = "dt", octet: int = 77) -> Iterator[Network]:
    """A bridge of this test's own (names ``{letters}NNNN`` and subnet 10.{octet}.N from the
    pid: two runs side by side do not meet; tests of their own pass their own ``letters`` and
    ``octet``), removed with every namespace on it at the end, however the test ends."""
    tag = os.getpid() % 10000
    # Zero-padded: the leftovers of run 12 are found by prefix, and must not be run 1234's.
    prefix = f"{letters}{tag:04d}"
    net = Network(prefix=prefix, subnet=f"10.{octet}.{tag % 200 + 20}", bridge=f"{prefix}br")
    _remove_leftovers(net)
    try:
        _run("ip", "link", "add", net.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        _run("ip", "link", "set", net.bridge, "up")
        yield net
    finally:
        net.teardown()


def ray_start(node: Node, env: Mapping[str, str], *args: str) -> None:
    """``ray start`` in ``node``'s namespace; its daemons stay there after it returns."""
    with node.log.open("ab") as log:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                node.name,
                ray_executable(),
                "start",
                f"--node-ip-address={node.ip}",
                f"--temp-dir={node.temp_dir}",
                "--disable-usage-stats",
                *args,
            ],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            timeout=180,
        )


def alive_nodes(dashboard: str, token: str) -> dict[str, float]:
    """``{node ip: CPUs}`` of the cluster's alive nodes, from the state API."""
    answer = httpx.get(
        f"{dashboard}/api/v0/nodes",
        params={"limit": 100, "detail": "true"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    answer.raise_for_status()
    rows = answer.json()["data"]["result"]["result"]
    return {
        row["node_ip"]: float(row.get("resources_total", {}).get("CPU", 0.0))
        for row in rows
        if row["state"] == "ALIVE"
    }


def wait_for_nodes(dashboard: str, token: str, ips: set[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            seen = alive_nodes(dashboard, token)
            if ips <= set(seen):
                return
        time.sleep(1)
    raise AssertionError(f"nodes {sorted(ips)} did not all join; alive: {seen}")
