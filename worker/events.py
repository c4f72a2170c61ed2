"""Trial events the driver emits (to the progress view, and to the service when it launched
the driver)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dualtune.core.states import TrialState

REFUSED = 6
"""The driver's exit status when the service refused its token (``worker.refusal``)."""


@dataclass(frozen=True)
class TrialEvent:
    """A trial's state change: ``running``, ``succeeded``, ``diverged``, ``stopped``,
    ``failed``."""

    sweep_id: str
    trial_id: str
    status: TrialState
    attempt: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    error: str | None = None


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of ``values`` that may leave the driver: named ``split/name`` and a real,
    finite number. NaN and infinity are dropped, not sent: JSON has no spelling for them and
    the service refuses them; a missing metric reads as NaN everywhere it is used (a bound it
    fails, a best it cannot be). The one filter for every path out (live events, pack
    members, the final replay, the report)."""
    return {
        k: float(v)
        for k, v in values.items()
        if "/" in k
        and isinstance(v, numbers.Real)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


def trial_state(value: object, default: TrialState = TrialState.FAILED) -> TrialState:
    """A status a trial reported to Tune, as a state: ``default`` when it reported none, and
    ``failed`` for a word that is no state (a trainable of another version)."""
    if value is None:
        return default
    try:
        return TrialState(str(value))
    except ValueError:
        return TrialState.FAILED


class EventSink(Protocol):
    def emit(self, event: TrialEvent) -> None:
        """Deliver an event. Must not raise: a sink outage never stops a sweep."""
        ...

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        """Where the sweep logs in MLflow (its experiment and parent run)."""
        ...


@runtime_checkable
class RefusableSink(EventSink, Protocol):
    """A sink whose receiver can refuse the driver altogether (the service, when this
    driver's token is revoked): the sweep must stop then, not train on unheard."""

    @property
    def refused(self) -> str | None:
        """Why the receiver refused this driver; ``None`` while it takes its events."""
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


def refusal(sweep_id: str) -> str | None:
    """Why the sweep's sink was refused (``RefusableSink``), or ``None``."""
    sink = _SINKS.get(sweep_id)
    return sink.refused if isinstance(sink, RefusableSink) else None


class DriverRefusedError(RuntimeError):
    """The sweep's sink was refused (``refusal``): the driver stopped its Tuner and did not
    finish the sweep (no report, no final events)."""


def check_not_refused(sweep_id: str) -> None:
    """Raise ``DriverRefusedError`` if the sweep's sink was refused."""
    why = refusal(sweep_id)
    if why is not None:
        raise DriverRefusedError(f"the service refused this driver: {why}")
