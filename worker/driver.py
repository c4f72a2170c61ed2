"""The sweep driver: check the sweep, run every trial as a Ray Tune trial, write the report.

The check comes first (``worker.preflight``): a sweep that cannot run here raises
``InvalidSweepError`` before Ray, MLflow or any trial is touched. Tasks and constraint kinds
that this process registered in-process (``register_task``) travel with the trainable
(``Registrations``) and are registered again in each trial's process.

A driver started again for the same sweep (same id, same storage path) restores the Tune
experiment (``Tuner.restore(..., resume_errored=True)``): finished trials are not re-run,
interrupted ones resume from their checkpoints, and MLflow runs are found again by tag.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from dualtune.core.reporting import TrialOutcome, build_report
from dualtune.core.spec import SweepSpec, TrialConfig
from dualtune.core.tasks.base import Dataset
from dualtune.core.tasks.shared_data import record_loads
from dualtune.worker.best_figures import final_arrays, log_best_figures
from dualtune.worker.callbacks import TrialEvents
from dualtune.worker.events import EventSink, NullSink, check_not_refused, register_sink
from dualtune.worker.outcomes import decode, unit_end
from dualtune.worker.packing import Unit, plan_units
from dualtune.worker.preflight import check_sweep
from dualtune.worker.ray_runtime import connect_ray, tune_config_overrides
from dualtune.worker.refusal import StopWhenRefused
from dualtune.worker.rung_board import start_board
from dualtune.worker.tracking import ensure_experiment, ensure_parent_run, log_sweep_report
from dualtune.worker.tracking.resilient import ResilientClient
from dualtune.worker.tracking.sweep_run import final_train_losses
from dualtune.worker.tune_state import record_tracking, set_aside_if_stale
from dualtune.worker.unit_settings import Registrations, TrackingSettings, WorkerEnvironment
from dualtune.worker.unit_trainable import run_unit

log = logging.getLogger(__name__)

UNITS_FILE = "dualtune_units.json"
"""The sweep's units (trial id → its pack), kept next to the Tune experiment: a restored
experiment must see the packs it was started with, whatever ``pack: auto`` would pick now."""


@dataclass(frozen=True)
class TrialRecord:
    outcome: TrialOutcome
    mlflow_run_id: str | None
    logging: str
    attempts: int


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    spec: SweepSpec
    trials: list[TrialRecord]
    report: dict[str, Any]
    parent_run_id: str | None
    tracking_uri: str
    experiment_path: str


# A unit may checkpoint at every evaluation (``limits.checkpoint_every_s: 0``, exact resume
# after a kill); Tune's warning that this forces frequent experiment snapshots is expected
# then, not actionable.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def default_storage() -> Path:
    return Path(os.environ.get("DUALTUNE_DATA_DIR", Path.home() / ".dualtune")) / "tune"


def _resources(spec: SweepSpec) -> dict[str, float]:
    return {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}


def _outcome(trial: TrialConfig, result: tune.Result | None) -> TrialRecord:
    """A trial's record from its unit's Tune result: the outcome the unit reported for it
    (``outcomes.unit_end`` when that was not an end state or the unit errored)."""
    reported = decode(result.metrics if result is not None else None).get(trial.trial_id)
    error = None
    if result is not None and result.error is not None:
        error = f"{type(result.error).__name__}: {result.error}"
    outcome = unit_end(trial.trial_id, reported, error=error)
    return TrialRecord(
        TrialOutcome(
            trial.trial_id,
            trial.method,
            dict(trial.params),
            outcome.status,
            dict(outcome.metrics),
            outcome.error,
        ),
        outcome.mlflow_run_id,
        outcome.logging,
        outcome.attempt,
    )


def _units(
    spec: SweepSpec, trials: Sequence[TrialConfig], experiment: Path
) -> dict[str, list[str]]:
    """Unit id → its trial ids: planned now (``worker.packing``), or read back for a
    restored experiment."""
    path = experiment / UNITS_FILE
    if path.exists():
        saved: dict[str, list[str]] = json.loads(path.read_text())
        return saved
    planned: list[Unit] = plan_units(spec, trials)
    units = {u.id: u.trial_ids for u in planned}
    experiment.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(units))
    tmp.replace(path)
    return units


def _final_train_losses(result: tune.Result | None, trial_id: str) -> np.ndarray | None:
    arrays = final_arrays(result, trial_id)
    return None if arrays is None else np.asarray(arrays.per_sample["train_loss"])


def run_sweep(
    spec: SweepSpec | Mapping[str, Any],
    *,
    sweep_id: str,
    storage_path: Path | None = None,
    tracking_uri: str,
    sink: EventSink | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
    only: Collection[str] | None = None,
    experiment_name: str | None = None,
    finished: Sequence[tuple[TrialOutcome, str | None]] = (),
) -> SweepResult:
    """Run (or resume) sweep ``sweep_id`` to the end and return its trials and report.

    ``only`` restricts the run to those trials (a retry), as Tune experiment
    ``experiment_name``; ``finished`` are the sweep's other trials with their MLflow run
    ids, which the report on the parent run includes. ``spec`` may be the stored document
    (a service's): it is validated here, where the plugins are installed.

    Raises:
        InvalidSweepError: the sweep cannot run here (``worker.preflight``); nothing has
            started.
        DriverRefusedError: the sink's receiver refused this driver (``worker.refusal``):
            the Tuner stopped every trial; no report was written.
    """
    # What the check and the planning load (a plugin's contract check, pack: auto's sizing)
    # is loaded once and travels to the units (core.tasks.shared_data).
    datasets: dict[str, Dataset] = {}
    with record_loads(datasets):
        spec = check_sweep(spec)
    storage = Path(storage_path or default_storage()).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    all_trials = spec.trials()
    trials = [t for t in all_trials if only is None or t.trial_id in set(only)]
    by_id = {t.trial_id: t for t in trials}
    sink = sink or NullSink()
    register_sink(sweep_id, sink)
    check_not_refused(sweep_id)

    client = ResilientClient(tracking_uri)
    experiment = storage / (experiment_name or sweep_id)
    # A Tune experiment belongs to the tracking store it logged into: run into another store
    # (or one without the sweep's parent run), it is set aside and the sweep starts fresh.
    set_aside_if_stale(client, experiment, experiment_name=spec.name, sweep_id=sweep_id)
    experiment_id = ensure_experiment(client, spec.name)
    parent_run_id = (
        ensure_parent_run(
            client,
            experiment_id,
            sweep_id=sweep_id,
            sweep_name=spec.name,
            params={"sweep.trials": str(len(all_trials)), "sweep.methods": ",".join(spec.methods)},
        )
        if experiment_id is not None
        else None
    )
    if parent_run_id is not None:
        record_tracking(experiment, tracking_uri, parent_run_id)
    sink.tracking(experiment_id, parent_run_id)
    tracking = TrackingSettings(
        tracking_uri, spec.name, sweep_id, parent_run_id, retry_budget_s=client.budget_s
    )

    connect_ray(ray_address)
    experiment_path = str(experiment)
    with record_loads(datasets):
        units = _units(spec, trials, experiment)
    board = start_board(
        spec,
        experiment,
        name=f"dualtune-rungs-{sweep_id}-{experiment.name}",
        trials=len(trials),
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            run_unit,
            trials={t.trial_id: t.model_dump(mode="json") for t in trials},
            units=units,
            tracking=tracking,
            datasets=datasets,
            registrations=Registrations.of_this_process(),
            environment=WorkerEnvironment.of_this_process(),
            selection=spec.selection,
            board=board,
        ),
        _resources(spec),
    )
    if tune.Tuner.can_restore(experiment_path):
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_id": tune.grid_search(list(units))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=int(os.environ.get("DUALTUNE_MAX_CONCURRENT", "0")) or None,
                **tune_config_overrides(),
            ),
            run_config=tune.RunConfig(
                name=experiment_name or sweep_id,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=spec.limits.max_failures),
                # Two, not one: Tune deletes the older checkpoint when it registers a new
                # one but snapshots the experiment later, so a driver killed in between
                # restored a trial from a checkpoint that was gone (seen once in six full
                # test runs). With two kept, the snapshot's checkpoint is gone only if the
                # snapshot lags two checkpoints behind.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                # Stops every trial once the service refuses this driver (worker.refusal).
                stop=StopWhenRefused(sweep_id),
                callbacks=[
                    TrialEvents(
                        sweep_id,
                        len(trials),
                        metric=spec.selection.metric,
                        mode=spec.selection.mode,
                        show_progress=show_progress,
                        units=units,
                    )
                ],
                verbose=0,
            ),
        )
    grid = tuner.fit()
    check_not_refused(sweep_id)  # a stray: no report, nothing more to anyone

    results: dict[str, tune.Result] = {}
    for i in range(len(grid)):
        result = grid[i]
        unit = (result.config or {}).get("trial_id")
        for trial_id in units.get(str(unit), []):
            if trial_id in by_id:
                results[trial_id] = result
    records = [_outcome(t, results.get(t.trial_id)) for t in trials]
    outcomes = [r.outcome for r in records] + [o for o, _ in finished if o.trial_id not in by_id]
    report = build_report(spec, outcomes, sweep_id=sweep_id)
    by_run = {r.outcome.trial_id: r.mlflow_run_id for r in records if r.mlflow_run_id}
    by_run.update({o.trial_id: run for o, run in finished if run and o.trial_id not in by_id})
    curves: dict[str, np.ndarray] = {}
    for entry in report["methods"]:
        best = entry["best"] or entry["best_infeasible"]
        if best is None:
            continue
        losses = _final_train_losses(results.get(best["trial_id"]), best["trial_id"])
        run_id = best.get("mlflow_run_id") or by_run.get(best["trial_id"])
        if losses is None and run_id:
            losses = final_train_losses(tracking_uri, run_id)
        if losses is not None:
            params = ", ".join(f"{k}={v}" for k, v in best["params"].items() if k != "seed")
            curves[f"{entry['method']} ({params})" if params else entry["method"]] = losses
    if spec.logging.plots == "best":
        # After the report: the best trials are known only now (see worker.best_figures).
        for missing in log_best_figures(report, by_id, results, by_run, tracking_uri):
            log.warning("best trial's figures not logged to MLflow: %s", missing)
    if parent_run_id is not None:
        missing = log_sweep_report(tracking_uri, parent_run_id, report, curves, outcomes=outcomes)
        if missing:
            log.warning("sweep report: %s", missing)
    return SweepResult(
        sweep_id, spec, records, report, parent_run_id, tracking_uri, experiment_path
    )
