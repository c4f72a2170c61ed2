"""``python -m worker drive``: run the sweep a service launched this driver for.

The driver fetches its sweep (spec, generation, trials to run), checks it here, where the
spec's plugins are installed (``worker.preflight``), runs the trials with events going to
the service, then sends every trial's final state once more (a replay is harmless) and
waits for the service to have them before it exits. Exit status 0 means the service has
everything; otherwise the service's reconciler relaunches the driver, which resumes. A sweep
that fails the check is failed on the service with the check's message, before any trial
starts, and the driver exits with status 5 (a relaunch would fail the same way).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rich.console import Console

from dualtune.core.spec import WORKER_TOKEN_ENV
from dualtune.worker.events import TrialEvent
from dualtune.worker.service_link import (
    ServiceEventSink,
    ServiceLink,
    ServiceRejectedError,
)

FLUSH_BUDGET_S = float(os.environ.get("DUALTUNE_EVENTS_FLUSH_S", "300"))
INVALID_SWEEP = 5


def drive_sweep(
    service_url: str, sweep_id: str, *, storage: Path | None, ray_address: str | None
) -> int:
    console = Console(stderr=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token = os.environ.get(WORKER_TOKEN_ENV)
    if not token:
        console.print(f"{WORKER_TOKEN_ENV} is not set: the service passes it to its drivers")
        return 2
    link = ServiceLink(service_url, sweep_id, token)
    try:
        sweep = link.fetch()
    except (ServiceRejectedError, ConnectionError) as exc:
        console.print(f"cannot fetch sweep {sweep_id} from {service_url}: {exc}")
        return 3
    from dualtune.worker.driver import run_sweep
    from dualtune.worker.preflight import InvalidSweepError
    from dualtune.worker.tracking import tracking_uri_from_env

    sink = ServiceEventSink(link, sweep.generation)
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
    except InvalidSweepError as exc:
        console.print(f"sweep {sweep_id} cannot run: {exc}", markup=False, highlight=False)
        sink.close(0)
        try:
            link.fail(sweep.generation, str(exc))
        except (ServiceRejectedError, ConnectionError) as failure:
            console.print(f"the service did not take the sweep's failure: {failure}", markup=False)
        link.close()
        return INVALID_SWEEP
    for record in result.trials:
        outcome = record.outcome
        sink.emit(
            TrialEvent(
                sweep_id,
                outcome.trial_id,
                outcome.status,
                attempt=record.attempts,
                metrics=dict(outcome.metrics),
                mlflow_run_id=record.mlflow_run_id,
                error=outcome.error,
            )
        )
    delivered = sink.close(FLUSH_BUDGET_S)
    link.close()
    if not delivered:
        console.print("the service did not take every trial's state; exiting for a relaunch")
        return 4
    return 0
