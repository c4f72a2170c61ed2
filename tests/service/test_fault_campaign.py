"""Issue 14's fault-injection campaign: exactly one driver per sweep, whatever dies when.

The real embedded stack (``dualtune up``: SQLite, the local launcher, local Ray per driver,
MLflow on SQLite) is started with ``DUALTUNE_CRASH_AT`` naming one crash point of
``dualtune.service.faults``; a sweep is submitted; the service SIGKILLs itself at that point
(its drivers run on in their own process groups, as they would after an OOM kill); it is
restarted on the same data dir and port without the crash point, and the sweep must end as
if nothing had happened:

* it ends ``succeeded``;
* at no sample of the process table are two drivers of the sweep alive;
* every trial is in the database once, ``succeeded``;
* every trial has exactly one MLflow child run, ``FINISHED``, under the sweep's one parent run;
* no driver of the sweep is left alive.

The same holds for two ``dualtune serve`` replicas on one Postgres behind a TCP balancer
(what a Kubernetes Service is), when the replica holding the sweep's lease is SIGKILLed
mid-run: the other takes the sweep over once the lease expires, and the driver's events
reach it through the balancer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dualtune.core.states import SWEEP_FINAL, SweepState, TrialState
from dualtune.service.faults import (
    EVENTS_APPLIED,
    FINISH_BEGUN,
    LAUNCH_RECORDED,
    LAUNCH_STARTED,
    POINTS,
)
from tests.ports import free_port
from tests.scratch_db import scratch_postgres
from tests.service.campaign import sampler as drivers
from tests.service.campaign.database import Snapshot, lease_owner, snapshot
from tests.service.campaign.mlflow_runs import sweep_runs
from tests.service.campaign.proxy import Balancer
from tests.service.campaign.services import ServiceProcess, cli, embedded, replica, stop_drivers

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

TRIALS = 3
SPEC: dict[str, Any] = {
    "name": "campaign",
    "task": {"name": "two_moons"},
    "constraint": {"kind": "sample_loss"},
    "methods": ["erm", "fl"],
    "grid": {"epsilon": [0.1, 0.3], "dual_lr": [0.05], "seed": 0},
    "train": {"epochs": 3},
    "pack": "off",  # one Ray trial per trial: events spread over the run, two at a time
    "logging": {"per_sample_every": 1000},
}
CUTS = [LAUNCH_RECORDED, LAUNCH_STARTED, f"{EVENTS_APPLIED}:2", FINISH_BEGUN]
"""Every crash point. The events are cut at the second batch that carries trial events (a
batch of MLflow ids alone, or a heartbeat, is not counted): the first holds the first trials'
events, and the second can never be the last, since the third trial starts only once one of
the first two has ended."""
AT_THE_CUT: dict[str, tuple[str, Callable[[Snapshot, bool], bool]]] = {
    LAUNCH_RECORDED: (
        "launching, no driver reference, no driver started",
        lambda db, driver_alive: (
            db.status == SweepState.LAUNCHING and db.launcher_ref is None and not driver_alive
        ),
    ),
    LAUNCH_STARTED: (
        "launching, no driver reference, its driver alive",
        lambda db, driver_alive: (
            db.status == SweepState.LAUNCHING and db.launcher_ref is None and driver_alive
        ),
    ),
    EVENTS_APPLIED: (
        "mid-events: some trial reported, some not final",
        lambda db, driver_alive: db.some_reported and not db.all_final,
    ),
    FINISH_BEGUN: (
        "every trial final, the sweep not closed",
        lambda db, driver_alive: db.all_final and db.status not in SWEEP_FINAL,
    ),
}
"""Where each cut must fall, as the database (and the process table) show it after the kill:
the crash points are where ``dualtune.service.faults`` says they are."""
SWEEP_S = 300.0
DRIVER_EXIT_S = 30.0


def test_the_campaign_cuts_at_every_crash_point() -> None:
    assert {cut.partition(":")[0] for cut in CUTS} == set(POINTS)


@dataclass
class Campaign:
    """One test's services, sampler and sweeps; torn down (drivers included) at the end."""

    root: Path
    sampler: drivers.DriverSampler
    services: list[ServiceProcess] = field(default_factory=list)
    sweep_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        """A line of the run's story (seconds since the start), printed with the logs."""
        self.notes.append(f"{time.monotonic() - self.started:6.1f} s  {what}")

    @property
    def data_dir(self) -> Path:
        return self.root / "dualtune"

    @property
    def logs(self) -> Path:
        return self.root / "service-logs"

    def add(self, service: ServiceProcess) -> ServiceProcess:
        self.services.append(service)
        return service

    def report(self) -> str:
        parts = ["===== campaign notes =====", *self.notes]
        parts += [service.log_text() for service in self.services]
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            parts.append(f"===== driver log {path.name} =====\n{_tail(path)}")
        for sweep_id in self.sweep_ids:
            parts.append(f"===== sampler, sweep {sweep_id}: {self.sampler.of(sweep_id)}")
        return "\n".join(parts)


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    with drivers.DriverSampler(interval_s=0.1) as sampler:
        run = Campaign(tmp_path, sampler)
        try:
            yield run
        finally:
            for service in run.services:
                service.kill()
            for sweep_id in run.sweep_ids:
                stop_drivers({d.pid for d in drivers.alive(sweep_id)})
            report = run.report()
            (tmp_path / "campaign-report.txt").write_text(report)
            print(report)  # shown by pytest when the test failed


def _api(url: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _submit(api: httpx.Client, campaign: Campaign) -> str:
    created = api.post("/sweeps", json={"spec": SPEC})
    assert created.status_code == 201, created.text
    sweep_id = str(created.json()["id"])
    campaign.sweep_ids.append(sweep_id)
    campaign.note(f"submitted {sweep_id}")
    return sweep_id


def _sweep(api: httpx.Client, sweep_id: str) -> dict[str, Any] | None:
    """The sweep, or None while no service answers."""
    try:
        response = api.get(f"/sweeps/{sweep_id}")
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _final(sweep: dict[str, Any] | None) -> bool:
    return sweep is not None and SweepState(sweep["status"]) in SWEEP_FINAL


def _wait(api: httpx.Client, sweep_id: str, until: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    sweep = None
    while time.monotonic() < deadline:
        sweep = _sweep(api, sweep_id)
        if sweep is not None and until(sweep):
            return sweep
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} not there in {timeout_s:.0f} s: {sweep}")


def _wait_for_self_kill(service: ServiceProcess, api: httpx.Client, sweep_id: str) -> int:
    """The service's exit status once it has killed itself at its crash point. Fails if the
    sweep ends first: the crash point was never reached."""
    deadline = time.monotonic() + SWEEP_S
    while time.monotonic() < deadline:
        code = service.wait_exit(timeout_s=0.5)
        if code is not None:
            return code
        sweep = _sweep(api, sweep_id)
        if _final(sweep):
            raise AssertionError(
                f"the service never reached its crash point: sweep {sweep_id} ended "
                f"{sweep and sweep['status']} with the service alive"
            )
    raise AssertionError(f"the service never reached its crash point in {SWEEP_S:.0f} s")


def _exactly_once(
    api: httpx.Client, campaign: Campaign, sweep_id: str, sweep: dict[str, Any]
) -> list[str]:
    """What breaks the campaign's invariants for ``sweep_id`` (empty: none)."""
    problems: list[str] = []
    if sweep["status"] != SweepState.SUCCEEDED:
        problems.append(f"the sweep ended {sweep['status']}: {sweep.get('error')}")

    seen = campaign.sampler.of(sweep_id)
    if seen.max_alive > 1:
        problems.append(f"more than one driver alive at once: {seen}")

    trials = api.get(f"/sweeps/{sweep_id}/trials", params={"limit": 100}).json()["items"]
    in_db = Counter(t["trial_id"] for t in trials)
    if len(in_db) != TRIALS or set(in_db.values()) != {1}:
        problems.append(f"trials in the database: {dict(in_db)} (expected {TRIALS}, once each)")
    not_done = {t["trial_id"]: t["status"] for t in trials if t["status"] != TrialState.SUCCEEDED}
    if not_done:
        problems.append(f"trials not succeeded: {not_done}")

    runs = sweep_runs(campaign.data_dir, sweep_id)
    if len(runs.parents) != 1:
        problems.append(f"MLflow parent runs of the sweep: {runs.parents} (expected one)")
    per_trial = Counter(r.trial_id for r in runs.children)
    if per_trial != Counter(dict.fromkeys(in_db, 1)):
        problems.append(f"MLflow child runs per trial: {dict(per_trial)} (expected one each)")
    unfinished = [(r.trial_id, r.status) for r in runs.children if r.status != "FINISHED"]
    if unfinished:
        problems.append(f"MLflow child runs not FINISHED: {unfinished}")
    orphans = [r.run_id for r in runs.children if r.parent_run_id not in runs.parents]
    if orphans:
        problems.append(f"MLflow child runs outside the sweep's parent run: {orphans}")

    left = drivers.wait_until_no_driver(sweep_id, DRIVER_EXIT_S)
    if left:
        problems.append(f"drivers still alive {DRIVER_EXIT_S:.0f} s after the end: {left}")
    return problems


@pytest.mark.parametrize("cut", CUTS)
def test_a_service_killed_at_a_crash_point_ends_the_sweep_exactly_once(
    cut: str, campaign: Campaign
) -> None:
    service = campaign.add(embedded(campaign.data_dir, free_port(), campaign.logs))
    service.start(crash_at=cut)
    token = (campaign.data_dir / "token").read_text().strip()
    with _api(service.url, token) as api:
        sweep_id = _submit(api, campaign)
        code = _wait_for_self_kill(service, api, sweep_id)
        assert code == -9, f"the service ended with {code}, not by its own SIGKILL at {cut}"
        at_cut = snapshot(f"sqlite:///{campaign.data_dir / 'dualtune.db'}", sweep_id)
        expected, holds = AT_THE_CUT[cut.partition(":")[0]]
        driver_alive = bool(drivers.alive(sweep_id))
        campaign.note(f"the service killed itself at {cut}: {at_cut}; driver alive {driver_alive}")
        assert holds(at_cut, driver_alive), (
            f"the cut at {cut} fell elsewhere: expected {expected}; found {at_cut}, "
            f"driver alive: {driver_alive}"
        )

        service.start()  # same data dir and port; the drivers it left post here again
        campaign.note("restarted without the crash point")
        sweep = _wait(api, sweep_id, _final, SWEEP_S)
        campaign.note(f"sweep ended {sweep['status']}: {sweep['trial_counts']}")
        problems = _exactly_once(api, campaign, sweep_id, sweep)
    assert not problems, f"cut at {cut}:\n" + "\n".join(problems)


def _holds(owner: str | None, r: ServiceProcess) -> bool:
    """Whether ``owner`` (``sweeps.lease_owner``) is replica ``r``: its replica id, alone or
    as the prefix of a per-process owner (``REPLICA@HOST:PID:START``)."""
    return owner is not None and (owner == r.name or owner.startswith(f"{r.name}@"))


def _holder(owner: str | None, replicas: list[ServiceProcess]) -> ServiceProcess:
    for r in replicas:
        if _holds(owner, r):
            return r
    raise AssertionError(f"no replica holds the sweep's lease: lease_owner = {owner!r}")


@pytest.mark.postgres
def test_two_replicas_on_postgres_one_killed_mid_run_end_the_sweep_exactly_once(
    campaign: Campaign,
) -> None:
    ports = [free_port(), free_port()]
    with scratch_postgres("campaign") as url, Balancer(ports, free_port()) as balancer:
        env = {
            "DUALTUNE_DATABASE_URL": url,
            "DUALTUNE_LAUNCHER": "local",
            "DUALTUNE_DATA_DIR": str(campaign.data_dir),
            "DUALTUNE_LEASE_S": "5",
            "DUALTUNE_SERVICE_URL": balancer.url,
        }
        cli("db", "upgrade", env=env, cwd=campaign.root)
        token = cli("token", "create", "--tenant", "campaign", env=env, cwd=campaign.root)
        replicas = [
            campaign.add(replica(name, port, env, campaign.logs))
            for name, port in zip(("replica-a", "replica-b"), ports, strict=True)
        ]
        try:
            for r in replicas:
                r.start()
            with _api(balancer.url, token.split()[-1]) as api:
                sweep_id = _submit(api, campaign)
                running = TrialState.RUNNING
                _wait(api, sweep_id, lambda s: s["trial_counts"].get(running, 0), SWEEP_S)
                holder = _holder(lease_owner(url, sweep_id), replicas)
                holder.kill()
                campaign.note(f"killed {holder.name}: {snapshot(url, sweep_id)}")
                survivor = next(r for r in replicas if r is not holder)
                owners = _owners_until_final(api, url, sweep_id)
                sweep = _wait(api, sweep_id, _final, 10)
                campaign.note(f"lease owners after the kill: {owners}; sweep {sweep['status']}")
                problems = _exactly_once(api, campaign, sweep_id, sweep)
            if not any(_holds(o, survivor) for o in owners):
                problems.append(f"{survivor.name} never held the lease; owners seen: {owners}")
            if not survivor.alive():
                problems.append(f"{survivor.name} died too")
        finally:
            for r in replicas:  # before the database goes
                r.kill()
    assert not problems, f"{holder.name} killed mid-run:\n" + "\n".join(problems)


def _owners_until_final(api: httpx.Client, url: str, sweep_id: str) -> list[str | None]:
    """The sweep's lease owners, in the order seen, until the sweep ends."""
    owners: list[str | None] = []
    deadline = time.monotonic() + SWEEP_S
    while not _final(_sweep(api, sweep_id)):
        assert time.monotonic() < deadline, f"sweep {sweep_id} not final in {SWEEP_S:.0f} s"
        owner = lease_owner(url, sweep_id)
        if not owners or owners[-1] != owner:
            owners.append(owner)
        time.sleep(0.5)
    return owners
