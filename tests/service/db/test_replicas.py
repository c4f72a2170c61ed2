"""Two service processes reconciling one Postgres database never launch a sweep twice."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from dualtune.service.db.engine import make_engine
from dualtune.service.db.repository import Repository
from dualtune.service.launchers import FakeLauncher
from dualtune.service.reconciler import Reconciler
from dualtune.service.records import NewTrial
from tests.ports import free_port


def _replica(url: str, owner: str, seconds: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = make_engine(url)
    launcher = FakeLauncher()
    reconciler = Reconciler(
        Repository(engine), launcher, service_url="http://s", tracking_uri="x", owner=owner
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reconciler.step()
    out.put([d.request.sweep_id for d in launcher.drivers.values()])
    engine.dispose()


@pytest.mark.postgres
def test_two_processes_on_postgres_launch_each_sweep_exactly_once(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    repo = Repository(engine)
    with engine.begin() as c:
        c.execute(text("TRUNCATE idempotency_keys, trials, sweeps, tokens, tenants CASCADE"))
    tenant = repo.create_token("load", "dt_replicas")
    ids = []
    for i in range(40):
        sweep, _ = repo.create_sweep(
            tenant,
            sweep_id=f"sw-rep{i:03d}",
            name="r",
            spec={},
            trials=[NewTrial("t", 0, "erm", {})],
        )
        ids.append(sweep.id)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    replicas = [
        context.Process(target=_replica, args=(postgres_url, f"replica-{k}", 4.0, out))
        for k in "ab"
    ]
    for p in replicas:
        p.start()
    launched = out.get(timeout=120) + out.get(timeout=120)
    for p in replicas:
        p.join(timeout=30)
    counts = Counter(launched)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}
    with engine.connect() as c:
        launches = c.execute(text("SELECT launch_count FROM sweeps")).scalars().all()
    assert set(launches) == {1}
    with engine.begin() as c:
        c.execute(text("TRUNCATE idempotency_keys, trials, sweeps, tokens, tenants CASCADE"))
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_two_service_processes_on_postgres_launch_each_sweep_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two real `dualtune serve` processes (fake launcher) share one Postgres database;
    sweeps submitted to either are each launched exactly once."""
    engine = make_engine(postgres_url)
    with engine.begin() as c:
        c.execute(text("TRUNCATE idempotency_keys, trials, sweeps, tokens, tenants CASCADE"))
    Repository(engine).create_token("two", "dt_two_replicas")
    servers = []
    for name in ("a", "b"):
        port = free_port()
        env = {
            **os.environ,
            "DUALTUNE_DATABASE_URL": postgres_url,
            "DUALTUNE_DATA_DIR": str(tmp_path / name),
            "DUALTUNE_LAUNCHER": "fake",
            "DUALTUNE_TESTING": "1",
            "DUALTUNE_PORT": str(port),
            "DUALTUNE_REPLICA_ID": f"replica-{name}",
            "DUALTUNE_RECONCILE_INTERVAL_S": "0.1",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "dualtune.service.cli", "serve", "--host", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.append((process, f"http://127.0.0.1:{port}"))
    try:
        for _, url in servers:
            _ready(url)
        headers = {"Authorization": "Bearer dt_two_replicas"}
        spec = {
            "name": "two",
            "task": {"name": "two_moons"},
            "constraint": {"kind": "sample_loss"},
            "methods": ["erm"],
        }
        for i in range(30):
            url = servers[i % 2][1]
            r = httpx.post(f"{url}/api/v1/sweeps", json={"spec": spec}, headers=headers)
            assert r.status_code == 201
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as c:
                states = c.execute(text("SELECT status FROM sweeps")).scalars().all()
            if set(states) == {"running"}:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a few more rounds from both replicas
        with engine.connect() as c:
            rows = c.execute(text("SELECT status, launch_count, lease_owner FROM sweeps")).all()
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=30)
    assert len(rows) == 30
    assert {r.status for r in rows} == {"running"}
    assert {r.launch_count for r in rows} == {1}
    # leases are per process, named after the replica id they run under
    assert {r.lease_owner.partition("@")[0] for r in rows} <= {"replica-a", "replica-b"}
    with engine.begin() as c:
        c.execute(text("TRUNCATE idempotency_keys, trials, sweeps, tokens, tenants CASCADE"))
    engine.dispose()


def _ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become ready")
