"""Two service processes reconciling one Postgres database never launch a sweep twice."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import pytest
from sqlalchemy import text

from service.db.engine import make_engine
from service.db.repository import Repository
from service.launchers import FakeLauncher
from service.reconciler import Reconciler
from service.records import NewTrial


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
