"""The live progress view of a sweep: trials done / running / failed and the best so far."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dualtune.core.states import TRIAL_FINAL, TrialState
from dualtune.worker.events import TrialEvent


class SweepProgress:
    """A progress bar on a terminal; one line per finished trial otherwise (logs, CI)."""

    def __init__(
        self, total: int, *, metric: str, mode: str, console: Console | None = None
    ) -> None:
        self.total, self.metric, self.mode = total, metric, mode
        self.console = console or Console(stderr=True)
        self.status: dict[str, str] = {}
        self.best: tuple[float, str] | None = None
        self._bar: Progress | None = None
        self._task = None
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]trials"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._bar.add_task(self._describe(), total=total)
            self._bar.start()

    def _count(self, state: TrialState) -> int:
        return sum(1 for s in self.status.values() if s == state)

    def _describe(self) -> str:
        best = f" · best {self.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        return (
            f"running {self._count(TrialState.RUNNING)}"
            f" · diverged {self._count(TrialState.DIVERGED)}"
            f" · stopped {self._count(TrialState.STOPPED)}"
            f" · failed {self._count(TrialState.FAILED)}{best}"
        )

    def update(self, event: TrialEvent) -> None:
        self.status[event.trial_id] = event.status
        value = event.metrics.get(self.metric)
        if event.status == TrialState.SUCCEEDED and value is not None and math.isfinite(value):
            score = value if self.mode == "min" else -value
            if self.best is None or score < (
                self.best[0] if self.mode == "min" else -self.best[0]
            ):
                self.best = (value, event.trial_id)
        done = sum(1 for s in self.status.values() if s in TRIAL_FINAL)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, description=self._describe())
        elif event.status in TRIAL_FINAL:
            shown = f" {self.metric}={value:.4g}" if value is not None else ""
            reason = (
                f" ({event.error})" if event.error and event.status != TrialState.SUCCEEDED else ""
            )
            self.console.print(
                f"[{done}/{self.total}] {event.trial_id} {event.status}{shown}{reason}",
                highlight=False,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
