"""A Tune callback that turns trial lifecycle into ``TrialEvent``s and a live progress view.

A Tune trial is a unit of 1..K dualtune trials; events are always per dualtune trial, read
from the ``MemberOutcome``s the unit reports (``worker.outcomes``), one branch for every
unit: its members start and recover together, and each ends when the unit reports its end
state (a diverged member while the others still train), or when the unit ends without one
(``outcomes.unit_end``: stopped by Tune, or failed).

Tune pickles its callbacks with the experiment (they come back on ``Tuner.restore``), so
this one keeps only plain data and rebuilds its console view lazily.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from dualtune.core.states import TrialState
from dualtune.worker.events import sink_for
from dualtune.worker.outcomes import MemberOutcome, decode, unit_end
from dualtune.worker.progress import SweepProgress


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
        self.last: dict[str, dict[str, MemberOutcome]] = {}
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

    def _open(self, trial: Any) -> list[str]:
        """The unit's trials that have not ended (reported an end state)."""
        unit = self._unit(trial)
        return [m for m in self.units.get(unit, [unit]) if m not in self.ended]

    def _emit(self, outcome: MemberOutcome) -> None:
        if outcome.ended:
            self.ended.add(outcome.trial_id)
        attempt = max(self.attempts.get(outcome.trial_id, 1), outcome.attempt)
        event = outcome.event(self.sweep_id, attempt=attempt)
        sink_for(self.sweep_id).emit(event)
        if self.progress is not None:
            self.progress.update(event)

    def _end_open(self, trial: Any, error: str | None) -> None:
        last = self.last.get(self._unit(trial), {})
        for trial_id in self._open(trial):
            self._emit(unit_end(trial_id, last.get(trial_id), error=error))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for trial_id in self._open(trial):
            self.attempts[trial_id] = self.attempts.get(trial_id, 0) + 1
            self._emit(MemberOutcome(trial_id, TrialState.RUNNING))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for trial_id in self._open(trial):
            self._emit(
                MemberOutcome(
                    trial_id,
                    TrialState.RUNNING,
                    error="retrying from checkpoint after a failure",
                )
            )

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        outcomes = decode(result)
        self.last[self._unit(trial)] = outcomes
        for outcome in outcomes.values():
            if outcome.ended and outcome.trial_id not in self.ended:
                self._emit(outcome)

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        self._end_open(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._end_open(trial, error=str(getattr(trial, "error_file", "") or "trial failed"))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._progress is not None:
            self._progress.close()
