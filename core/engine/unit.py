"""A unit: what one Ray trial trains, 1..K trials behind one trainer interface.

A unit of one trial (and every trial of a task or kind that cannot pack) trains with the
unpacked ``Trainer``; K > 1 trials with the vmapped ``PackTrainer``. Both answer
``UnitTrainer``, so ``fit_unit`` and the worker's one trainable never branch on the size of
a unit, and both keep one state layout: each active member's single-trial state (the
``Trainer.state_dict`` of its trial) and the members that diverged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

import numpy as np

from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.pack_trainer import PACK_STATE_VERSION, PackTrainer
from dualtune.core.engine.trainer import Trainer
from dualtune.core.spec import TrialConfig
from dualtune.core.tasks import Dataset, Task

UNIT_STATE_VERSION = PACK_STATE_VERSION
"""A unit's ``state_dict`` layout: ``{"version", "members": {trial_id: trial state},
"diverged": {trial_id: (epoch, detail)}, "stopped": [trial_id]}`` for one member as for
many (``stopped`` may be absent: none)."""


class UnitTrainer(Protocol):
    """What ``fit_unit`` needs of a trainer, for one member or a pack."""

    task: Task
    data: Dataset
    diverged: dict[str, Diverged]
    stopped: set[str]

    @property
    def epoch(self) -> int: ...

    @property
    def histories(self) -> dict[str, list[dict[str, float]]]: ...

    @property
    def active(self) -> list[str]: ...

    def train_epoch(self) -> list[str]: ...

    def stop(self, trial_ids: Collection[str]) -> None:
        """Take the active members ``trial_ids`` out: stopped early, the others go on."""

    def evaluate(self) -> dict[str, dict[str, float]]: ...

    def per_sample(self, trial_id: str) -> dict[str, np.ndarray]: ...

    def multipliers_of(self, trial_id: str) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SingleTrainer:
    """The unpacked ``Trainer`` as a unit of one: a divergence is recorded, not raised, and
    the state has the unit layout around the trial's own state."""

    def __init__(self, config: TrialConfig) -> None:
        self.trainer = Trainer(config)
        self.trial_id = config.trial_id
        self.task = self.trainer.task
        self.data = self.trainer.data
        self.diverged: dict[str, Diverged] = {}
        self.stopped: set[str] = set()

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    @property
    def histories(self) -> dict[str, list[dict[str, float]]]:
        return {self.trial_id: self.trainer.history}

    @property
    def active(self) -> list[str]:
        return [] if self.diverged or self.stopped else [self.trial_id]

    def stop(self, trial_ids: Collection[str]) -> None:
        if self.trial_id in trial_ids and self.active:
            self.stopped.add(self.trial_id)

    def train_epoch(self) -> list[str]:
        if not self.active:
            return []
        try:
            self.trainer.train_epoch()
        except Diverged as exc:
            self.diverged[self.trial_id] = exc
            return [self.trial_id]
        return []

    def evaluate(self) -> dict[str, dict[str, float]]:
        if not self.active:
            return {}
        try:
            return {self.trial_id: self.trainer.evaluate()}
        except Diverged as exc:
            self.diverged[self.trial_id] = exc
            return {}

    def _check(self, trial_id: str) -> None:
        if trial_id != self.trial_id or not self.active:
            raise KeyError(f"{trial_id!r} is not an active member of this unit")

    def per_sample(self, trial_id: str) -> dict[str, np.ndarray]:
        self._check(trial_id)
        return self.trainer.per_sample()

    def multipliers_of(self, trial_id: str) -> np.ndarray:
        self._check(trial_id)
        return self.trainer.multipliers.value.detach().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": UNIT_STATE_VERSION,
            "members": {self.trial_id: self.trainer.state_dict()} if self.active else {},
            "diverged": {t: (e.epoch, e.detail) for t, e in self.diverged.items()},
            "stopped": sorted(self.stopped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != UNIT_STATE_VERSION:
            raise ValueError(f"unsupported unit state version {state.get('version')!r}")
        diverged = {t: Diverged(int(e), str(d)) for t, (e, d) in state["diverged"].items()}
        stopped = set(state.get("stopped", ()))
        members = state["members"]
        held = set(members) | set(diverged) | stopped
        if held != {self.trial_id}:
            raise ValueError(
                f"unit state is for trials {sorted(held)}, this unit trains {self.trial_id!r}"
            )
        self.diverged, self.stopped = diverged, stopped
        if self.trial_id in members:
            self.trainer.load_state_dict(members[self.trial_id])


def unit_trainer(configs: Sequence[TrialConfig]) -> UnitTrainer:
    """The trainer of a unit: unpacked for one trial, a pack for more (``NotPackable`` when
    they cannot share one; the driver's planning keeps such trials in units of one)."""
    if not configs:
        raise ValueError("a unit needs at least one trial")
    if len(configs) == 1:
        return SingleTrainer(configs[0])
    return PackTrainer(configs)


def unit_state(trial_state: dict[str, Any]) -> dict[str, Any]:
    """The unit state of one trial's ``Trainer.state_dict`` (a ``core.fit`` resume)."""
    return {
        "version": UNIT_STATE_VERSION,
        "members": {str(trial_state["trial_id"]): trial_state},
        "diverged": {},
        "stopped": [],
    }
