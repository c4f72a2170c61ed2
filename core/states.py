"""The states of sweeps and trials, and the transitions between them (ARCHITECTURE §3.6).

Defined once, here, and imported everywhere a state is stored, sent or shown: the service's
repository, its API schemas and CLI, the worker's events. Pure Python (no torch, no
pydantic), so every layer may import it.

Within one generation of a sweep a final state is final: a late or replayed event cannot
turn a succeeded trial failed, nor a cancelled sweep running. Only ``retry`` leaves a final
state, and it opens a new generation (the retried trials run as a new Tune experiment).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class SweepState(StrEnum):
    PENDING = "pending"
    """Stored, not launched yet (or waiting out a refused launch's backoff)."""
    LAUNCHING = "launching"
    """A launch is recorded (its submission id) and the driver is being started."""
    RUNNING = "running"
    """A driver runs the trials."""
    CANCELLING = "cancelling"
    """Cancel was asked for; the reconciler stops every driver of the sweep."""
    SUCCEEDED = "succeeded"
    """Every trial is final and at least one succeeded."""
    FAILED = "failed"
    """The sweep could not run, or no trial succeeded."""
    CANCELLED = "cancelled"


class TrialState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Raised an error (after Tune's retries), or its driver gave up."""
    DIVERGED = "diverged"
    """Its loss or multipliers went non-finite; the trainer stopped it."""
    STOPPED = "stopped"
    """Ended early by the driver's scheduler or stopper, with the metrics it had."""
    CANCELLED = "cancelled"


SWEEP_FINAL = frozenset({SweepState.SUCCEEDED, SweepState.FAILED, SweepState.CANCELLED})
SWEEP_ACTIVE = frozenset(set(SweepState) - SWEEP_FINAL)
TRIAL_FINAL = frozenset(
    {
        TrialState.SUCCEEDED,
        TrialState.FAILED,
        TrialState.DIVERGED,
        TrialState.STOPPED,
        TrialState.CANCELLED,
    }
)
TRIAL_SELECTABLE = frozenset({TrialState.SUCCEEDED, TrialState.STOPPED})
"""The trials that selection, reports and fronts read: those that finished training, on
their own or stopped early by the sweep's scheduler with the metrics they had."""
TRIAL_RETRYABLE = frozenset({TrialState.FAILED, TrialState.DIVERGED, TrialState.CANCELLED})
TRIAL_REPORTED = frozenset(
    {
        TrialState.RUNNING,
        TrialState.SUCCEEDED,
        TrialState.FAILED,
        TrialState.DIVERGED,
        TrialState.STOPPED,
    }
)
"""The states a driver reports in its events (pending and cancelled are the service's)."""

SWEEP_TRANSITIONS: Mapping[SweepState, frozenset[SweepState]] = {
    SweepState.PENDING: frozenset({SweepState.LAUNCHING, SweepState.CANCELLED, SweepState.FAILED}),
    SweepState.LAUNCHING: frozenset(
        {SweepState.RUNNING, SweepState.PENDING, SweepState.CANCELLING, SweepState.FAILED}
    ),
    SweepState.RUNNING: frozenset(
        {
            SweepState.LAUNCHING,  # its driver ended with trials left: relaunch (resumes)
            SweepState.CANCELLING,
            SweepState.SUCCEEDED,
            SweepState.FAILED,
        }
    ),
    SweepState.CANCELLING: frozenset({SweepState.CANCELLED}),
    # Final within the generation; retry opens a new one and starts again at pending.
    SweepState.SUCCEEDED: frozenset({SweepState.PENDING}),
    SweepState.FAILED: frozenset({SweepState.PENDING}),
    SweepState.CANCELLED: frozenset({SweepState.PENDING}),
}

TRIAL_TRANSITIONS: Mapping[TrialState, frozenset[TrialState]] = {
    TrialState.PENDING: frozenset(set(TrialState) - {TrialState.PENDING}),
    TrialState.RUNNING: frozenset(set(TrialState) - {TrialState.PENDING}),
    **{state: frozenset() for state in TRIAL_FINAL},
}
"""Within one generation; ``running → running`` is a new attempt (Tune's retry)."""


class IllegalTransitionError(ValueError):
    """A change of state the tables above do not allow."""


def sweep_may(current: SweepState | str, new: SweepState | str) -> bool:
    return SweepState(new) in SWEEP_TRANSITIONS[SweepState(current)]


def trial_may(current: TrialState | str, new: TrialState | str) -> bool:
    return TrialState(new) in TRIAL_TRANSITIONS[TrialState(current)]


def check_sweep_transition(current: SweepState | str, new: SweepState | str) -> SweepState:
    """``new`` as a ``SweepState``; raises ``IllegalTransitionError`` where the table has no
    such move."""
    if not sweep_may(current, new):
        raise IllegalTransitionError(f"a sweep cannot go from {current} to {new}")
    return SweepState(new)


def sweep_outcome(trial_counts: Mapping[str, int]) -> SweepState:
    """How a sweep whose trials are all final ends: ``succeeded`` if any trial succeeded,
    else ``failed``."""
    if trial_counts.get(TrialState.SUCCEEDED, 0) > 0:
        return SweepState.SUCCEEDED
    return SweepState.FAILED


def no_success_error(trial_counts: Mapping[str, int]) -> str:
    """The error of a sweep that ended with no trial succeeded: what its trials did."""
    parts = [f"{n} {state}" for state in TrialState if (n := trial_counts.get(state, 0))]
    return "no trial succeeded (" + (", ".join(parts) or "no trials") + ")"
