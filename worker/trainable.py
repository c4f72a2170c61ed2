"""The Ray Tune function trainable: one dualtune trial, with checkpoints and MLflow logging.

It runs ``core.fit`` with a reporter that, at each evaluation, logs the metrics to the
trial's MLflow child run (one ``log_batch``), writes per-sample artifacts every
``logging.per_sample_every`` epochs, and reports to Tune with a checkpoint holding the whole
trainer state (model, optimizers, multipliers, dual state, RNG). A retried trial resumes
from ``tune.get_checkpoint()`` and logs into the same child run.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from dualtune import core
from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS
from dualtune.core.catalog.constraints import ConstraintKindInfo
from dualtune.core.catalog.tasks import TaskInfo
from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.result import EvalReport
from dualtune.core.spec import TrialConfig
from dualtune.core.states import TrialState
from dualtune.worker.tracking import TrialRunLogger

STATE_FILE = "trainer_state.pt"
PER_SAMPLE_FILE = "per_sample_final.npz"
STATUS_KEY = "dualtune/status"
RUN_ID_KEY = "dualtune/mlflow_run_id"
LOGGING_KEY = "dualtune/logging"
ERROR_KEY = "dualtune/error"


@dataclass(frozen=True)
class TrackingSettings:
    tracking_uri: str
    experiment_name: str
    sweep_id: str
    parent_run_id: str | None
    retry_budget_s: float
    """The driver's ``DUALTUNE_MLFLOW_RETRY_BUDGET_S``: Ray workers do not see the driver's
    environment as it is now, so it travels with the trial."""


@dataclass(frozen=True)
class Registrations:
    """The tasks and constraint kinds the driver registered in-process
    (``dualtune.register_task``, ``register_constraint_kind``). A trial's process discovers
    the entry points again but knows nothing of these: the trainable carries them and
    registers them again before it builds its trial."""

    tasks: tuple[TaskInfo, ...] = ()
    constraint_kinds: tuple[ConstraintKindInfo, ...] = ()

    @classmethod
    def of_this_process(cls) -> Registrations:
        return cls(TASKS.registered_in_process(), CONSTRAINT_KINDS.registered_in_process())

    def apply(self) -> None:
        """Register every entry here (a no-op for one this process already has, such as
        the driver's own when a trial runs in the driver's process)."""
        for kind in self.constraint_kinds:
            if CONSTRAINT_KINDS.get(kind.name) != kind:
                CONSTRAINT_KINDS.register(kind)
        for task in self.tasks:
            if TASKS.get(task.name) != task:
                TASKS.register(task)


def _load_state(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as directory:
        state: dict[str, Any] = torch.load(Path(directory) / STATE_FILE, weights_only=False)
    return state


def _report(
    metrics: dict[str, Any], state: dict[str, Any], per_sample: dict[str, np.ndarray] | None = None
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        torch.save(state, Path(directory) / STATE_FILE)
        if per_sample is not None:
            np.savez_compressed(
                Path(directory) / PER_SAMPLE_FILE, train_loss=per_sample["train_loss"]
            )
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def set_torch_threads() -> None:
    """Several trials share a worker's cores; one thread each keeps them from thrashing."""
    torch.set_num_threads(max(1, int(os.environ.get("DUALTUNE_TORCH_THREADS", "1"))))


def trial_logger(
    trial: TrialConfig, tracking: TrackingSettings, client: MlflowClient | None = None
) -> TrialRunLogger:
    """The MLflow child run of ``trial`` (found again by its tags after a restart)."""
    return TrialRunLogger(
        tracking.tracking_uri,
        tracking.experiment_name,
        sweep_id=tracking.sweep_id,
        trial_id=trial.trial_id,
        method=trial.method,
        params=trial.flat_params(),
        parent_run_id=tracking.parent_run_id,
        retry_budget_s=tracking.retry_budget_s,
        mlflow_client=client,
    )


def measured_epsilon(trial: TrialConfig) -> float:
    return float(trial.value("epsilon"))


def run_trial(
    config: dict[str, Any], *, trials: dict[str, dict[str, Any]], tracking: TrackingSettings
) -> None:
    """Tune entry point; ``config`` holds only ``trial_id``, the rest comes by parameter."""
    trial = TrialConfig.model_validate(trials[config["trial_id"]])
    set_torch_threads()
    logger = trial_logger(trial, tracking)
    done = logger.completed()
    if done is not None:
        # Finished before a restart that Tune had not recorded: report, do not re-run.
        tune.report(
            {
                **done.metrics,
                STATUS_KEY: done.status.value,
                ERROR_KEY: done.error or "",
                LOGGING_KEY: "",
                RUN_ID_KEY: logger.run_id or "",
            }
        )
        return
    logger.start()
    checkpoint = tune.get_checkpoint()
    resume = _load_state(checkpoint) if checkpoint is not None else None
    epsilon = measured_epsilon(trial)
    every = trial.logging.per_sample_every

    def reporter(report: EvalReport) -> None:
        logger.log_metrics(report.epoch, report.metrics)
        if report.is_last or report.epoch % every == 0:
            logger.log_per_sample(report.epoch, report.per_sample(), epsilon=epsilon)
        if report.is_last:
            # Reported once more below, after the plots, with the logging summary.
            final_state.update(report.state_dict())
        else:
            _report({**report.metrics, STATUS_KEY: TrialState.RUNNING.value}, report.state_dict())

    final_state: dict[str, Any] = {}
    try:
        result = core.fit(trial, reporter=reporter, resume=resume)
    except Diverged as exc:
        logger.set_status_tag(TrialState.DIVERGED, str(exc))
        summary = logger.finish("FAILED")
        tune.report(
            {
                STATUS_KEY: TrialState.DIVERGED.value,
                ERROR_KEY: str(exc),
                LOGGING_KEY: summary.message,
                RUN_ID_KEY: logger.run_id or "",
                "epoch": float(exc.epoch),
            }
        )
        return
    logger.log_final(result.per_sample, epsilon=epsilon, multipliers=result.multipliers)
    logger.set_status_tag(TrialState.SUCCEEDED)
    summary = logger.finish("FINISHED")
    final = {
        **result.final,
        STATUS_KEY: TrialState.SUCCEEDED.value,
        LOGGING_KEY: summary.message,
        RUN_ID_KEY: logger.run_id or "",
    }
    _report(final, final_state, {"train_loss": result.per_sample["train_loss"]})
