"""A driver the service refuses stops: its sink hears the refusal even while no trial
changes state (the heartbeat), the Tune stopper turns it into a stop of every trial, and a
watchdog ends the process if the Tuner is slow to stop. The whole driver process against a
real service is in test_refused_driver.py (Ray)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time

import psutil

from dualtune.core.states import TrialState
from dualtune.worker.events import REFUSED, TrialEvent, register_sink
from dualtune.worker.refusal import StopWhenRefused
from dualtune.worker.service_link import ServiceEventSink, ServiceLink
from tests.worker.served import Served, moons_spec


def test_a_revoked_driver_hears_it_from_the_heartbeat_with_no_event_to_send(
    served: Served,
) -> None:
    sweep_id = served.submit(moons_spec("heartbeat", seeds=1))
    token = served.launch(sweep_id)
    heard: list[str] = []
    link = ServiceLink(served.url, sweep_id, token)
    sink = ServiceEventSink(link, 0, heartbeat_s=0.2, on_refused=heard.append)
    time.sleep(1.0)  # heartbeats go out and are accepted
    assert sink.refused is None

    served.repo.request_cancel(served.tenant, sweep_id)
    deadline = time.monotonic() + 20
    while sink.refused is None:
        # Rounds stop the (fake) driver and close the sweep: the token is void.
        served.reconciler.step()
        assert time.monotonic() < deadline, "the driver never heard that it was refused"
        time.sleep(0.1)
    assert heard == [sink.refused]
    assert sink.refused.startswith("401")
    sink.emit(TrialEvent(sweep_id, "any", TrialState.RUNNING))  # dropped: nobody listens
    assert not sink.close(timeout_s=1)
    link.close()


class _Sink:
    def __init__(self) -> None:
        self.refused: str | None = None

    def emit(self, event: TrialEvent) -> None:
        del event

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        del experiment_id, parent_run_id


def test_the_stopper_stops_all_trials_once_the_sink_is_refused_even_restored() -> None:
    sink = _Sink()
    register_sink("sw-stopper", sink)
    stopper = StopWhenRefused("sw-stopper")
    restored = pickle.loads(pickle.dumps(stopper))  # as Tune keeps it with the experiment
    assert not stopper.stop_all()
    assert not stopper("trial", {"val/loss_mean": 1.0})
    sink.refused = "401: revoked"
    assert stopper.stop_all()
    assert restored.stop_all()
    assert not StopWhenRefused("sw-other").stop_all()


def _gone(pid: int, *, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_the_watchdog_ends_a_driver_that_does_not_stop_with_its_children() -> None:
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        from dualtune.worker.refusal import RefusalWatchdog
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        RefusalWatchdog(grace_s=0.5).arm("401: revoked")
        time.sleep(120)  # a Tuner that never stops
        """
    )
    started = time.monotonic()
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == REFUSED, err
    assert time.monotonic() - started < 30
    assert _gone(int(out), within_s=10)  # its child went with it
    assert "did not stop" in err
