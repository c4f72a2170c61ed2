"""A Ray head and two Ray workers, each in its own network namespace, token auth on."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.netns import (
    DASHBOARD_PORT,
    FAST_NODE_DEATH,
    GCS_PORT,
    Cluster,
    network,
    ray_start,
    skip_unless_possible,
    wait_for_nodes,
)
from tests.ray_jobs import wait_for_job_agent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    skip_unless_possible()
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        **FAST_NODE_DEATH,
    }
    env.pop("RAY_ADDRESS", None)
    with network() as net:
        head = net.add_node("h", tmp_path)
        workers = [net.add_node(f"w{i}", tmp_path) for i in (1, 2)]
        ray_start(
            head,
            env,
            "--head",
            f"--port={GCS_PORT}",
            "--dashboard-host=0.0.0.0",
            f"--dashboard-port={DASHBOARD_PORT}",
            "--include-dashboard=true",
            "--num-cpus=0",  # the head runs the driver, never a trial
        )
        for worker in workers:
            ray_start(worker, env, f"--address={head.ip}:{GCS_PORT}", "--num-cpus=1")
        found = Cluster(net, head, workers, token, tmp_path / "shared")
        found.shared.mkdir()
        wait_for_nodes(found.dashboard, token, {head.ip, *(w.ip for w in workers)})
        wait_for_job_agent(found.dashboard, token)
        yield found
