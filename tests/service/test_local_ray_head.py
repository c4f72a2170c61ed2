"""The embedded stack's Ray head (``service.launchers.local_ray_head``): one runtime for the
stack's life, which the local launcher's drivers join, stopped with nothing left behind."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from dualtune.core.spec import Runtime
from dualtune.service.launchers import LaunchRequest, LocalLauncher, local_ray_head
from dualtune.service.launchers.local_ray_head import LocalRayHead
from tests.ports import free_port

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

# What a driver sees once it has joined: the runtime's GCS, its CPUs, and what a task (a
# trial's process) finds in its environment.
DRIVER = """
import json, os, ray
from dualtune.worker.ray_runtime import connect_ray
connect_ray(None)
probe = ray.remote(lambda: (os.environ.get("FROM_SPEC"), os.environ.get("DUALTUNE_DB_SECRET")))
print(json.dumps({
    "gcs": ray.get_runtime_context().gcs_address,
    "cpus": ray.cluster_resources().get("CPU"),
    "task_env": ray.get(probe.remote()),
}))
"""


@pytest.fixture
def head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalRayHead]:
    # A secret of the service's that neither drivers nor trials may see.
    monkeypatch.setenv("DUALTUNE_DB_SECRET", "postgresql://secret")
    started = LocalRayHead(tmp_path / "data", num_cpus=1)
    yield started
    started.stop()


def test_a_driver_the_local_launcher_starts_joins_the_head_and_stop_leaves_nothing_behind(
    head: LocalRayHead, tmp_path: Path
) -> None:
    address = head.start()
    assert address is not None
    assert stat.S_IMODE(head.token_path.stat().st_mode) == 0o600
    launcher = LocalLauncher(tmp_path / "logs", head.data_dir, ray_head_env=head.driver_env())
    request = LaunchRequest(
        "s1", 1, 1, "http://127.0.0.1:1", "tok", "sqlite:///x.db",
        runtime=Runtime(env_vars={"FROM_SPEC": "yes"}),
    )  # fmt: skip
    env = launcher.driver_env(request)
    assert env["DUALTUNE_RAY_ADDRESS"] == address
    joined = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=180
    )
    assert joined.returncode == 0, joined.stderr[-3000:]
    seen = json.loads(joined.stdout.strip().splitlines()[-1])
    assert seen["gcs"].rsplit(":", 1)[1] == address.rsplit(":", 1)[1]  # this head, no other
    assert seen["cpus"] == 1.0
    assert seen["task_env"] == ["yes", None]  # the spec's variable, not the service's secret

    assert head.pid is not None
    family = [psutil.Process(head.pid), *psutil.Process(head.pid).children(recursive=True)]
    assert any("raylet" in " ".join(p.cmdline()) for p in family)
    head.stop()
    alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert head.driver_env() == {}  # drivers launched from now on start their own
    head.stop()  # idempotent


def test_a_head_that_does_not_start_leaves_drivers_to_start_their_own(
    head: LocalRayHead, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(local_ray_head, "ray_executable", lambda: "/bin/false")
    with caplog.at_level(logging.WARNING, logger="dualtune.launchers.local_ray_head"):
        assert head.start(timeout_s=10) is None
    assert "drivers start their own" in caplog.text or "starts its own" in caplog.text
    assert head.driver_env() == {}
    launcher = LocalLauncher(head.data_dir / "logs", head.data_dir, ray_head_env={})
    request = LaunchRequest("s1", 1, 1, "http://127.0.0.1:1", "tok", "sqlite:///x.db")
    assert "DUALTUNE_RAY_ADDRESS" not in launcher.driver_env(request)


def test_a_long_data_dir_gets_a_short_temp_dir_for_rays_sockets(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60)
    temp = LocalRayHead(deep)._temp_dir()
    try:
        assert not temp.is_relative_to(deep)
        assert len(str(temp)) <= local_ray_head.MAX_TEMP_DIR_CHARS
    finally:
        os.rmdir(temp)


def test_ctrl_c_on_up_stops_its_ray_head_with_everything_under_it(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "dualtune", free_port()
    data_dir.mkdir()
    command = [sys.executable, "-m", "dualtune.service.cli", "up", "--no-ui", "--port", str(port)]
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "DUALTUNE_NUM_CPUS": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.3)
        assert "Ray on 127.0.0.1:" in (tmp_path / "up.log").read_text()
        parent = psutil.Process(up.pid)
        heads = [p for p in parent.children() if "--head" in p.cmdline()]
        assert len(heads) == 1
        family = [heads[0], *heads[0].children(recursive=True)]
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends `up`
        up.wait(timeout=60)
        psutil.wait_procs(family, timeout=30)
        alive = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
