"""What a cut left in the service's database, read directly (the service is dead then)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text

from dualtune.core.states import TRIAL_FINAL, SweepState, TrialState


@dataclass(frozen=True)
class Snapshot:
    """A sweep's row and its trials' states, as committed."""

    status: SweepState
    launcher_ref: str | None
    trials: dict[str, TrialState]

    @property
    def some_reported(self) -> bool:
        return any(s != TrialState.PENDING for s in self.trials.values())

    @property
    def all_final(self) -> bool:
        return all(s in TRIAL_FINAL for s in self.trials.values())

    def __str__(self) -> str:
        trials = ", ".join(f"{t}={s}" for t, s in sorted(self.trials.items()))
        return f"sweep {self.status}, launcher_ref {self.launcher_ref!r}, trials {trials}"


def _engine_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def snapshot(url: str, sweep_id: str) -> Snapshot:
    engine = create_engine(_engine_url(url))
    try:
        with engine.connect() as c:
            row = c.execute(
                text("SELECT pk, status, launcher_ref FROM sweeps WHERE id = :id"),
                {"id": sweep_id},
            ).one()
            trials = c.execute(
                text("SELECT trial_id, status FROM trials WHERE sweep_pk = :pk"), {"pk": row.pk}
            ).all()
    finally:
        engine.dispose()
    states = {t.trial_id: TrialState(t.status) for t in trials}
    return Snapshot(SweepState(row.status), row.launcher_ref, states)


def lease_owner(url: str, sweep_id: str) -> str | None:
    """``sweeps.lease_owner`` of ``sweep_id``: which replica process holds the sweep now."""
    engine = create_engine(_engine_url(url))
    try:
        with engine.connect() as c:
            owner = c.execute(
                text("SELECT lease_owner FROM sweeps WHERE id = :id"), {"id": sweep_id}
            ).scalar()
    finally:
        engine.dispose()
    return None if owner is None else str(owner)
