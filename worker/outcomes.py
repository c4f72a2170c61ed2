"""The outcome of each member of a unit, as Tune results, the driver and the service see it.

Every report a unit makes to Tune carries one ``MemberOutcome`` per member under
``MEMBERS_KEY`` (a nested dict: Tune hands it unflattened to its callbacks' ``on_trial_result``
and keeps it in ``Result.metrics``), for a unit of one as for a pack: ``running`` with the
latest metrics while the member trains, then its end state. ``encode`` is the one way in,
``decode`` the one way out; the callback's events (``MemberOutcome.event``) and the driver's
outcomes read nothing else of a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dualtune.core.states import TrialState
from dualtune.worker.events import TrialEvent, finite_metrics, trial_state

MEMBERS_KEY = "dualtune/members"
"""The result key of a unit's ``{trial_id: encoded MemberOutcome}``."""


@dataclass(frozen=True)
class MemberOutcome:
    """One member of a unit: its state now and what it has to show for it.

    Attributes:
        trial_id: the trial this member is.
        status: ``running`` while it trains, then its end state.
        metrics: its latest evaluation (finite values named ``split/name`` only).
        error: why it diverged or failed.
        mlflow_run_id: its child run, once it has one.
        logging: what did not reach MLflow (``LoggingSummary.message``; empty when all did).
        attempt: which start of its unit this is (1 for the first).
    """

    trial_id: str
    status: TrialState
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    mlflow_run_id: str | None = None
    logging: str = ""
    attempt: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", finite_metrics(self.metrics))

    @property
    def ended(self) -> bool:
        return self.status != TrialState.RUNNING

    def ending(self, status: TrialState, error: str | None = None) -> MemberOutcome:
        """This member ended as ``status`` (a unit Tune stopped or lost) with what it had."""
        return replace(self, status=status, error=error if error is not None else self.error)

    def event(self, sweep_id: str, *, attempt: int | None = None) -> TrialEvent:
        """The one way a member's outcome becomes a trial event."""
        return TrialEvent(
            sweep_id,
            self.trial_id,
            self.status,
            attempt=attempt if attempt is not None else self.attempt,
            metrics=dict(self.metrics),
            mlflow_run_id=self.mlflow_run_id,
            error=self.error,
        )


def encode(outcomes: Mapping[str, MemberOutcome]) -> dict[str, Any]:
    """The part of a Tune report that carries ``outcomes``."""
    return {
        MEMBERS_KEY: {
            o.trial_id: {
                "status": o.status.value,
                "metrics": dict(o.metrics),
                "error": o.error,
                "mlflow_run_id": o.mlflow_run_id,
                "logging": o.logging,
                "attempt": o.attempt,
            }
            for o in outcomes.values()
        }
    }


def decode(result: Mapping[str, Any] | None) -> dict[str, MemberOutcome]:
    """The members' outcomes in a Tune result (``{}`` for none, or a result of something
    else). A status that is no state reads as ``failed`` (``events.trial_state``)."""
    raw = (result or {}).get(MEMBERS_KEY)
    if not isinstance(raw, Mapping):
        return {}
    outcomes: dict[str, MemberOutcome] = {}
    for trial_id, member in raw.items():
        if not isinstance(member, Mapping):
            continue
        metrics = member.get("metrics")
        outcomes[str(trial_id)] = MemberOutcome(
            str(trial_id),
            trial_state(member.get("status")),
            dict(metrics) if isinstance(metrics, Mapping) else {},
            str(member["error"]) if member.get("error") else None,
            str(member["mlflow_run_id"]) if member.get("mlflow_run_id") else None,
            str(member.get("logging") or ""),
            int(member.get("attempt") or 1),
        )
    return outcomes


def unit_end(trial_id: str, reported: MemberOutcome | None, *, error: str | None) -> MemberOutcome:
    """A member's outcome once its unit has ended: what it reported when that was its end
    state; ``stopped`` with its last metrics when its last report was an evaluation and the
    unit ended without an error (Tune stopped it: a stopper or a scheduler); ``failed``
    when the unit errored (``error``) or ended without a word of it."""
    if reported is not None and reported.ended:
        return reported
    if error is not None:
        base = reported or MemberOutcome(trial_id, TrialState.FAILED)
        return base.ending(TrialState.FAILED, error)
    if reported is None:
        return MemberOutcome(
            trial_id, TrialState.FAILED, error="the unit ended without its outcome"
        )
    return reported.ending(TrialState.STOPPED)
