"""``python -m worker drive``: run the sweep a service launched this driver for.

The driver fetches its sweep (spec, generation, trials to run), checks it here, where the
spec's plugins are installed (``worker.preflight``), runs the trials with events going to
the service, then sends every trial's final state once more (a replay is harmless) and
waits for the service to have them before it exits.

Exit status: 0 the service has everything; 2 no token; 3 the sweep could not be fetched
(the service did not answer); 4 events not delivered (the service's reconciler relaunches
the driver, which resumes); 5 the sweep failed the check, and is failed on the service with
the check's message before any trial starts (a relaunch would fail the same way); 6
(``REFUSED``) the service refused this driver's token, on any call: it is a stray, or its
sweep is over, so it stopped its Tuner (``worker.refusal``) and exits without training on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rich.console import Console

from dualtune.core.spec import WORKER_TOKEN_ENV
from dualtune.core.states import TrialState
from dualtune.worker.events import REFUSED, DriverRefusedError, TrialEvent
from dualtune.worker.service_link import (
    InputRejectedError,
    ServiceEventSink,
    ServiceLink,
    ServiceRejectedError,
)

FLUSH_BUDGET_S = float(os.environ.get("DUALTUNE_EVENTS_FLUSH_S", "300"))
INVALID_SWEEP = 5
log = logging.getLogger("dualtune.worker.drive")


def drive_sweep(
    service_url: str,
    sweep_id: str,
    *,
    storage: Path | None,
    ray_address: str | None,
    submission_id: str | None = None,
) -> int:
    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log.info(
        "driver of sweep %s (submission %s), pid %d, service %s",
        sweep_id,
        submission_id or "-",
        os.getpid(),
        service_url,
    )
    token = os.environ.get(WORKER_TOKEN_ENV)
    if not token:
        console.print(f"{WORKER_TOKEN_ENV} is not set: the service passes it to its drivers")
        return 2
    link = ServiceLink(service_url, sweep_id, token)
    try:
        sweep = link.fetch()
    except ServiceRejectedError as exc:
        console.print(f"the service refused this driver of sweep {sweep_id}: {exc}", markup=False)
        link.close()
        return REFUSED
    except (InputRejectedError, ConnectionError) as exc:
        console.print(f"cannot fetch sweep {sweep_id} from {service_url}: {exc}", markup=False)
        link.close()
        return 3
    from dualtune.worker.driver import run_sweep
    from dualtune.worker.preflight import InvalidSweepError
    from dualtune.worker.process_exit import exit_process
    from dualtune.worker.refusal import RefusalWatchdog
    from dualtune.worker.tracking import tracking_uri_from_env

    watchdog = RefusalWatchdog()
    sink = ServiceEventSink(link, sweep.generation, on_refused=watchdog.arm)
    console.print(
        f"sweep {sweep_id} generation {sweep.generation}: {len(sweep.run_trial_ids)} trials",
        highlight=False,
    )
    try:
        result = run_sweep(
            sweep.spec,
            sweep_id=sweep_id,
            storage_path=storage,
            tracking_uri=tracking_uri_from_env(),
            sink=sink,
            ray_address=ray_address,
            show_progress=False,
            only=sweep.run_trial_ids,
            experiment_name=sweep.experiment_name,
            finished=sweep.finished,
        )
    except DriverRefusedError as exc:
        console.print(f"{exc}; the Tuner stopped", markup=False, highlight=False)
        sink.close(0)
        link.close()
        exit_process(REFUSED)  # Ray left (its leftovers killed) and out: nothing more here
    except InvalidSweepError as exc:
        console.print(f"sweep {sweep_id} cannot run: {exc}", markup=False, highlight=False)
        sink.close(0)
        try:
            link.fail(sweep.generation, str(exc))
        except ServiceRejectedError as refused:
            console.print(f"the service refused this driver: {refused}", markup=False)
            link.close()
            return REFUSED
        except (InputRejectedError, ConnectionError) as failure:
            console.print(f"the service did not take the sweep's failure: {failure}", markup=False)
        link.close()
        return INVALID_SWEEP
    for record in result.trials:
        outcome = record.outcome
        sink.emit(  # the sink keeps only finite metrics (events.finite_metrics)
            TrialEvent(
                sweep_id,
                outcome.trial_id,
                TrialState(outcome.status),
                attempt=record.attempts,
                metrics=dict(outcome.metrics),
                mlflow_run_id=record.mlflow_run_id,
                error=outcome.error,
            )
        )
    delivered = sink.close(FLUSH_BUDGET_S)
    link.close()
    if rejected := sink.rejected_events:
        console.print(
            f"the service rejected {len(rejected)} events, dropped (their reasons are logged "
            "above); the others were delivered",
            highlight=False,
        )
    if sink.refused is not None:
        console.print(f"the service refused this driver: {sink.refused}", markup=False)
        return REFUSED
    if not delivered:
        console.print("the service did not take every trial's state; exiting for a relaunch")
        return 4
    return 0
