"""A Tune callback that turns trial lifecycle into ``TrialEvent``s and a live progress view.

Tune pickles its callbacks with the experiment (they come back on ``Tuner.restore``), so
this one keeps only plain data and rebuilds its console view lazily.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from worker.events import TrialEvent, sink_for
from worker.progress import SweepProgress
from worker.trainable import ERROR_KEY, RUN_ID_KEY, STATUS_KEY


class TrialEvents(Callback):
    """Emits trial events to a sink and drives the progress view."""

    def __init__(
        self, sweep_id: str, total: int, *, metric: str, mode: str, show_progress: bool
    ) -> None:
        self.sweep_id = sweep_id
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

    def _trial_id(self, trial: Any) -> str:
        return str(trial.config["trial_id"])

    def _emit(self, trial: Any, status: str, **kwargs: Any) -> None:
        trial_id = self._trial_id(trial)
        event = TrialEvent(
            self.sweep_id, trial_id, status, attempt=self.attempts.get(trial_id, 1), **kwargs
        )
        sink_for(self.sweep_id).emit(event)
        if self.progress is not None:
            self.progress.update(event)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        trial_id = self._trial_id(trial)
        self.attempts[trial_id] = self.attempts.get(trial_id, 0) + 1
        self._emit(trial, "running")

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._emit(trial, "running", error="retrying from checkpoint after a failure")

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        self.last[self._trial_id(trial)] = result

    def on_trial_complete(
        self, iteration: int, trials: list[Any], trial: Any, **info: Any
    ) -> None:
        result = self.last.get(self._trial_id(trial), {})
        status = str(result.get(STATUS_KEY, "succeeded"))
        metrics = {
            k: float(v)
            for k, v in result.items()
            if "/" in k
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(float(v))
        }
        self._emit(
            trial,
            status,
            metrics=metrics,
            mlflow_run_id=str(result.get(RUN_ID_KEY) or "") or None,
            error=str(result.get(ERROR_KEY)) if result.get(ERROR_KEY) else None,
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._emit(trial, "failed", error=str(getattr(trial, "error_file", "") or "trial failed"))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self._progress is not None:
            self._progress.close()
