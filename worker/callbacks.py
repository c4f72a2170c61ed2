"""A Tune callback that turns trial lifecycle into ``TrialEvent``s and a live progress view.

A Tune trial is a unit: one dualtune trial or a pack. Events are always per dualtune trial:
a pack's members start and recover together, and each ends when the pack reports its
outcome (a diverged member while the others still train).

Tune pickles its callbacks with the experiment (they come back on ``Tuner.restore``), so
this one keeps only plain data and rebuilds its console view lazily.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from dualtune.core.states import TrialState
from dualtune.worker.events import TrialEvent, finite_metrics, sink_for, trial_state
from dualtune.worker.pack_trainable import member_outcomes
from dualtune.worker.progress import SweepProgress
from dualtune.worker.trainable import ERROR_KEY, RUN_ID_KEY, STATUS_KEY


class TrialEvents(Callback):
    """Emits trial events to a sink and drives the progress view."""

    def __init__(
        self,
        sweep_id: str,
        total: int,
        *,
        metric: str,
        mode: str,
        show_progress: bool,
        units: dict[str, list[str]] | None = None,
    ) -> None:
        self.sweep_id = sweep_id
        self.units = dict(units or {})
        self.ended: set[str] = set()
        self.total = total
        self.metric, self.mode = metric, mode
        self.show_progress = show_progress
        self.attempts: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self._progress: SweepProgress | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_progress"] = None
        return state

    @property
    def progress(self) -> SweepProgress | None:
        if self.show_progress and self._progress is None:
            self._progress = SweepProgress(self.total, metric=self.metric, mode=self.mode)
        return self._progress

    def _unit(self, trial: Any) -> str:
        return str(trial.config["trial_id"])

    def _members(self, trial: Any) -> list[str]:
        unit = self._unit(trial)
        return self.units.get(unit, [unit])

    def _open(self, trial: Any) -> list[str]:
        """The unit's trials still to run: a pack's members that reported their outcome
        (a diverged member, or all of them after a restart) have ended."""
        members = self._members(trial)
        return members if len(members) == 1 else [m for m in members if m not in self.ended]

    def _emit(self, trial_id: str, status: TrialState, **kwargs: Any) -> None:
        event = TrialEvent(
            self.sweep_id, trial_id, status, attempt=self.attempts.get(trial_id, 1), **kwargs
        )
        sink_for(self.sweep_id).emit(event)
        if self.progress is not None:
            self.progress.update(event)

    def _emit_members(self, result: dict[str, Any]) -> None:
        for trial_id, outcome in member_outcomes(result).items():
            if trial_id in self.ended:
                continue
            self.ended.add(trial_id)
            self._emit(
                trial_id,
                trial_state(outcome.get("status"), TrialState.FAILED),
                metrics=finite_metrics(outcome.get("metrics") or {}),
                mlflow_run_id=outcome.get("run_id") or None,
                error=outcome.get("error") or None,
            )

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for trial_id in self._open(trial):
            self.attempts[trial_id] = self.attempts.get(trial_id, 0) + 1
            self._emit(trial_id, TrialState.RUNNING)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for trial_id in self._open(trial):
            self._emit(
                trial_id, TrialState.RUNNING, error="retrying from checkpoint after a failure"
            )

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.last[self._unit(trial)] = result
        self._emit_members(result)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        result = self.last.get(self._unit(trial), {})
        # Completed while its last report was an evaluation, not its outcome: Tune stopped
        # it early (a stopper or a scheduler), which is not an error.
        stopped = result.get(STATUS_KEY) == TrialState.RUNNING
        if len(self._members(trial)) > 1:
            self._emit_members(result)
            for trial_id in self._open(trial):
                if stopped:
                    self._emit(trial_id, TrialState.STOPPED)
                else:
                    self._emit(
                        trial_id, TrialState.FAILED, error="the pack ended without its outcome"
                    )
            return
        self._emit(
            self._unit(trial),
            TrialState.STOPPED
            if stopped
            else trial_state(result.get(STATUS_KEY), TrialState.SUCCEEDED),
            metrics=finite_metrics(result),
            mlflow_run_id=str(result.get(RUN_ID_KEY) or "") or None,
            error=str(result.get(ERROR_KEY)) if result.get(ERROR_KEY) else None,
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error = str(getattr(trial, "error_file", "") or "trial failed")
        for trial_id in self._open(trial):
            self._emit(trial_id, TrialState.FAILED, error=error)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._progress is not None:
            self._progress.close()
