"""The Ray Tune trainable: one unit of 1..K trials, trained by ``core.engine.fit.fit_unit``.

Each member stays its own trial everywhere users look: its own MLflow child run (metrics
every evaluation, per-sample tables, final artifacts, status tag), its own state in every
checkpoint (``worker.unit_checkpoint``) and its own ``MemberOutcome`` in every report to Tune
(``worker.outcomes``). A member that diverges is finished as ``diverged`` at once; the others
go on. After a kill, Tune restarts the unit from its last checkpoint and every member
resumes from its own state; a member whose child run had already finished is not run again.

At each evaluation the order is: buffer every member's metrics (``log_metrics``, which
flushes when due), then save the checkpoint with what is still unsent when one is due
(``limits.checkpoint_every_s`` since the previous, and always at the end), then report to
Tune (with the checkpoint; without one, once a second and when a member ended). A process
that dies in between resumes from the last checkpoint, buffers its unsent metrics again
(``restore_unsent``), trains the evaluations since then again and logs them again; the
logger's watermark drops an epoch MLflow already holds, so every epoch is logged once.

With ``early_stopping``, at each rung the unit asks the sweep's rung board
(``worker.rung_board``) about its members there; a member it stops ends ``stopped`` at that
evaluation (its tables, final artifacts and best feasible evaluation logged, its run ended on
the closer thread) and the others train on.

Figures (``logging.plots``): ``all`` draws each member's at its end; ``best`` leaves them to
the driver, which draws the best trials' from the final arrays of the last checkpoint;
``none`` draws none.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray import tune

from dualtune.core.early_stopping import rung_at
from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.fit import fit_unit
from dualtune.core.engine.result import TrialResult, UnitEvalReport
from dualtune.core.reporting import TABLE_METRICS, best_feasible_metrics
from dualtune.core.spec import Selection, TrialConfig
from dualtune.core.states import TrialState
from dualtune.core.tasks.base import Dataset
from dualtune.core.tasks.shared_data import provide
from dualtune.worker import unit_checkpoint
from dualtune.worker.crash_points import AFTER_LOG, crash_point
from dualtune.worker.outcomes import MemberOutcome, encode
from dualtune.worker.rung_board import RungBoard
from dualtune.worker.tracking import LoggingSummary, TrialRunLogger
from dualtune.worker.unit_checkpoint import FinalArrays, UnitCheckpoint
from dualtune.worker.unit_settings import (
    Registrations,
    TrackingSettings,
    WorkerEnvironment,
    set_torch_threads,
)

REPORT_EVERY_S = 1.0
"""Seconds between a unit's reports to Tune that carry no checkpoint. Each report is a round
trip to the driver (the unit waits until Tune has taken it), and Tune needs only the
members' ends and the checkpoints: the metrics go to MLflow on their own. A member's end
(diverged) is reported at once."""
ATTEMPTS_FILE = "dualtune_attempts"
"""Counts the starts of a unit in its Tune trial folder (which outlives its processes)."""


def trial_logger(trial: TrialConfig, tracking: TrackingSettings) -> TrialRunLogger:
    """The MLflow child run of ``trial`` (found again by its tags after a restart), logged
    through the process's one MLflow client."""
    return TrialRunLogger(
        tracking.tracking_uri,
        tracking.experiment_name,
        sweep_id=tracking.sweep_id,
        trial_id=trial.trial_id,
        method=trial.method,
        params=trial.flat_params(),
        parent_run_id=tracking.parent_run_id,
        retry_budget_s=tracking.retry_budget_s,
    )


def measured_epsilon(trial: TrialConfig) -> float:
    return float(trial.value("epsilon"))


def _this_node() -> tuple[str, str]:
    """This process's Ray node: its IP and its node id."""
    ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return str(ip), str(ray.get_runtime_context().get_node_id())


def _unit_dir() -> Path:
    return Path(tune.get_context().get_trial_dir())


def _count_attempt(unit_dir: Path, resumed: int) -> int:
    """This start's number: one more than the folder's count, or than the checkpoint's
    (a unit retried on another node, or restored by a new driver, has a new folder)."""
    path = unit_dir / ATTEMPTS_FILE
    try:
        counted = int(path.read_text()) if path.exists() else 0
    except ValueError:
        counted = 0
    attempt = max(counted, resumed) + 1
    unit_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(str(attempt))
    return attempt


class _Unit:
    """One start of a unit: its members' loggers and outcomes, and how it reports."""

    def __init__(
        self,
        trials: Sequence[TrialConfig],
        tracking: TrackingSettings,
        selection: Selection,
        board: RungBoard | None,
    ) -> None:
        self.trials = list(trials)
        self.selection = selection
        self.board = board
        self.judged: dict[str, set[int]] = {t.trial_id: set() for t in trials}
        """The rungs at which each member has had the board's decision (this start)."""
        self.stopped_finals: dict[str, FinalArrays] = {}
        self.closer = ThreadPoolExecutor(1, thread_name_prefix="dualtune-closer")
        self.closing: dict[str, Future[LoggingSummary]] = {}
        self.stopped_state: dict[str, Any] = {}
        self.unit_dir = _unit_dir()
        self.loggers = {t.trial_id: trial_logger(t, tracking) for t in trials}
        self.epsilon = {t.trial_id: measured_epsilon(t) for t in trials}
        self.every = trials[0].logging.per_sample_every
        self.plots = trials[0].logging.plots
        self.checkpoint_every_s = trials[0].limits.checkpoint_every_s
        self.last_checkpoint = self.last_report = time.monotonic()
        self.outcomes: dict[str, MemberOutcome] = {}
        self.attempt = 1

    def _running(self, trial_id: str, metrics: dict[str, float] | None = None) -> MemberOutcome:
        last = self.outcomes.get(trial_id)
        return MemberOutcome(
            trial_id,
            TrialState.RUNNING,
            metrics if metrics is not None else (last.metrics if last else {}),
            mlflow_run_id=self.loggers[trial_id].run_id,
            attempt=self.attempt,
        )

    def _finish(
        self,
        trial_id: str,
        status: TrialState,
        metrics: dict[str, float],
        error: str | None,
        *,
        wait: bool = True,
    ) -> None:
        """End the member's run as ``status``. Without ``wait`` (a member stopped while the
        others train on) its run is ended on the closer thread, so that sending what it had
        buffered does not hold up training; the unit waits for it before its last report
        (``_closed``), which then carries the logging summary."""
        logger = self.loggers[trial_id]
        logger.set_status_tag(status, error)
        finished = "FINISHED" if status in (TrialState.SUCCEEDED, TrialState.STOPPED) else "FAILED"
        self.outcomes[trial_id] = MemberOutcome(
            trial_id, status, metrics, error, logger.run_id, "", self.attempt
        )
        if wait:
            self._summarise(trial_id, logger.finish(finished))
        else:
            self.closing[trial_id] = self.closer.submit(logger.finish, finished)

    def _summarise(self, trial_id: str, summary: LoggingSummary) -> None:
        self.outcomes[trial_id] = replace(self.outcomes[trial_id], logging=summary.message)

    def _closed(self) -> None:
        """Wait for the runs ended on the closer thread."""
        for trial_id, ending in self.closing.items():
            self._summarise(trial_id, ending.result())
        self.closing.clear()
        self.closer.shutdown()

    def _ended(self, trial_id: str) -> bool:
        return trial_id in self.outcomes and self.outcomes[trial_id].ended

    def _diverged(self, found: dict[str, Diverged]) -> None:
        for trial_id, exc in found.items():
            if not self._ended(trial_id):
                # No metrics: its last evaluation is not what it ended with.
                self._finish(trial_id, TrialState.DIVERGED, {}, str(exc))

    def _ending_metrics(
        self, metrics: dict[str, float], history: list[dict[str, float]]
    ) -> dict[str, float]:
        """A member's last metrics with its best feasible evaluation beside them."""
        return {**metrics, **best_feasible_metrics(history, self.selection, TABLE_METRICS)}

    def _to_stop(self, report: UnitEvalReport) -> set[str]:
        """The members the rung board stops at this evaluation (none at the last one)."""
        if self.board is None or report.is_last:
            return set()
        rung = rung_at(self.board.rungs, report.epoch)
        if rung is None:
            return set()
        asking = {t: m for t, m in report.metrics.items() if rung not in self.judged[t]}
        if not asking:
            return set()
        decisions = self.board.decide(rung, asking)
        for trial_id in asking:
            self.judged[trial_id].add(rung)
        return {t for t, goes_on in decisions.items() if not goes_on}

    def _end(self, trial_id: str, result: TrialResult, status: TrialState) -> FinalArrays:
        """Log a member's final artifacts and finish its run as ``status``."""
        self.loggers[trial_id].log_final(
            result.per_sample,
            epsilon=self.epsilon[trial_id],
            multipliers=result.multipliers,
            hardest=result.hardest,
            figures=self.plots == "all",
        )
        metrics = self._ending_metrics(result.final, result.history)
        self._finish(trial_id, status, metrics, None, wait=status != TrialState.STOPPED)
        return FinalArrays(result.per_sample, result.multipliers, result.hardest)

    def _report(self, epoch: int | None, checkpoint: UnitCheckpoint | None) -> None:
        self.last_report = time.monotonic()
        report: dict[str, Any] = encode(self.outcomes)
        if epoch is not None:
            report["epoch"] = epoch
        if checkpoint is None:
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as directory:
            unit_checkpoint.save(Path(directory), checkpoint)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(directory))

    def _ended_count(self) -> int:
        return sum(outcome.ended for outcome in self.outcomes.values())

    def _report_due(self) -> bool:
        return time.monotonic() - self.last_report >= REPORT_EVERY_S

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_checkpoint >= self.checkpoint_every_s

    def _checkpoint(
        self, state: dict[str, Any], finals: dict[str, FinalArrays] | None = None
    ) -> UnitCheckpoint:
        unsent = {
            trial_id: logger.unsent_metrics()
            for trial_id, logger in self.loggers.items()
            if not self._ended(trial_id)
        }
        return UnitCheckpoint(state, unsent, self.attempt, finals or {})

    def run(self) -> None:
        for trial_id, logger in self.loggers.items():
            done = logger.completed()
            if done is not None:  # finished before a restart that Tune had not recorded
                self.outcomes[trial_id] = MemberOutcome(
                    trial_id, done.status, done.metrics, done.error, logger.run_id
                )
        todo = [t for t in self.trials if t.trial_id not in self.outcomes]
        if not todo:
            self._report(None, None)
            return
        ids = [t.trial_id for t in todo]
        checkpoint = tune.get_checkpoint()
        resume: UnitCheckpoint | None = None
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                resume = unit_checkpoint.load(Path(directory), ids)
        self.attempt = _count_attempt(self.unit_dir, resume.attempt if resume else 0)
        node_ip, node_id = _this_node()
        for trial_id in ids:
            self.loggers[trial_id].start()
            self.loggers[trial_id].set_node(node_ip, node_id)
            if resume is not None and trial_id in resume.unsent:
                self.loggers[trial_id].restore_unsent(resume.unsent[trial_id])
            self.outcomes[trial_id] = self._running(trial_id)
        final_state: dict[str, Any] = {}

        def reporter(report: UnitEvalReport) -> set[str]:
            ended_before = self._ended_count()
            self._diverged(report.diverged)
            stopping = self._to_stop(report)
            for trial_id, metrics in report.metrics.items():
                logger = self.loggers[trial_id]
                if report.is_last or trial_id in stopping:
                    history = report.trainer.histories[trial_id]
                    metrics = self._ending_metrics(metrics, history)
                logger.log_metrics(report.epoch, metrics)
                if report.is_last or report.epoch % self.every == 0 or trial_id in stopping:
                    logger.log_per_sample(
                        report.epoch, report.per_sample(trial_id), epsilon=self.epsilon[trial_id]
                    )
                self.outcomes[trial_id] = self._running(trial_id, metrics)
            if stopping:
                # What the unit's last checkpoint holds when every member stops early.
                self.stopped_state = report.state_dict()
            for trial_id in sorted(stopping):
                result = report.result(trial_id)
                self.stopped_finals[trial_id] = self._end(trial_id, result, TrialState.STOPPED)
            crash_point(AFTER_LOG, report.epoch, self.unit_dir)
            if report.is_last:
                final_state.update(report.state_dict())  # saved below, with the outcomes
            elif self._checkpoint_due():
                self._report(report.epoch, self._checkpoint(report.state_dict()))
                self.last_checkpoint = time.monotonic()
            elif self._report_due() or self._ended_count() > ended_before:
                self._report(report.epoch, None)
            return stopping

        self.last_checkpoint = self.last_report = time.monotonic()  # periods of training
        result = fit_unit(todo, reporter=reporter, resume=resume.state if resume else None)
        self._diverged(result.diverged)
        finals = dict(self.stopped_finals)
        for trial_id, trial_result in result.results.items():
            finals[trial_id] = self._end(trial_id, trial_result, TrialState.SUCCEEDED)
        self._closed()
        state = final_state or self.stopped_state
        if state:
            self._report(None, self._checkpoint(state, finals))
        else:  # every member diverged before an evaluation: nothing new to resume from
            self._report(None, None)


def run_unit(
    config: dict[str, Any],
    *,
    trials: dict[str, dict[str, Any]],
    units: dict[str, list[str]],
    tracking: TrackingSettings,
    datasets: Mapping[str, Dataset] | None = None,
    registrations: Registrations | None = None,
    environment: WorkerEnvironment | None = None,
    selection: Selection | None = None,
    board: RungBoard | None = None,
) -> None:
    """Tune entry point: ``config["trial_id"]`` names a unit (``units``: its trial ids; a
    trial id that names no unit is a unit of itself). The driver's ``environment`` and
    in-process ``registrations`` are applied first: the trials' configs name them; the
    ``datasets`` the driver loaded are what the unit trains on
    (``core.tasks.shared_data``). ``selection`` picks each member's best feasible
    evaluation; ``board``, the sweep's rung board when it stops early."""
    if environment is not None:
        environment.apply()
    if registrations is not None:
        registrations.apply()
    provide(datasets or {})
    set_torch_threads()
    members = units.get(config["trial_id"], [config["trial_id"]])
    configs = [TrialConfig.model_validate(trials[m]) for m in members]
    _Unit(configs, tracking, selection or Selection(), board).run()


__all__ = ["run_unit"]
