"""Trial events the driver emits (to the progress view, and to the service when it launched
the driver)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TrialEvent:
    """A trial's state change: ``running``, ``succeeded``, ``diverged``, ``failed``."""

    sweep_id: str
    trial_id: str
    status: str
    attempt: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    error: str | None = None


class EventSink(Protocol):
    def emit(self, event: TrialEvent) -> None:
        """Deliver an event. Must not raise: a sink outage never stops a sweep."""
        ...

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        """Where the sweep logs in MLflow (its experiment and parent run)."""
        ...


class NullSink:
    def emit(self, event: TrialEvent) -> None:
        del event

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        del experiment_id, parent_run_id


_SINKS: dict[str, EventSink] = {}


def register_sink(sweep_id: str, sink: EventSink) -> None:
    """Attach the driver's sink for a sweep. Tune pickles its callbacks (and restores them
    with the experiment), so they look the live sink up here instead of holding it."""
    _SINKS[sweep_id] = sink


def sink_for(sweep_id: str) -> EventSink:
    return _SINKS.get(sweep_id, NullSink())
