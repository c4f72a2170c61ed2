"""What a trial hands back: per-evaluation reports while it runs, and the final result."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dualtune.core.engine.errors import Diverged
    from dualtune.core.engine.hardest import HardestSamples
    from dualtune.core.engine.trainer import Trainer
    from dualtune.core.engine.unit import UnitTrainer


@dataclass(frozen=True)
class EvalReport:
    """Handed to the reporter after each evaluation.

    ``state_dict()`` (everything needed to resume) and ``per_sample()`` (numpy arrays of
    per-sample losses, labels, groups and multipliers) are computed only when called, so a
    reporter that does not checkpoint or log artifacts this epoch pays nothing for them.
    """

    epoch: int
    metrics: dict[str, float]
    is_last: bool
    trainer: Trainer

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def per_sample(self) -> dict[str, np.ndarray]:
        return self.trainer.per_sample()


Reporter = Callable[[EvalReport], None]


@dataclass
class TrialResult:
    """The outcome of ``core.fit``.

    Attributes:
        trial_id: the trial's id from the spec expansion.
        method: the method name.
        history: one metric dict per evaluation (ARCHITECTURE §3.4 names, plus ``epoch``).
        final: the last evaluation's metrics.
        per_sample: ``train_loss``, ``train_label``, ``val_loss``, ``val_label``,
            ``multiplier`` (per training sample, for a per-sample kind such as
            ``sample_loss``) and ``{split}_group`` arrays where the task has a group
            attribute.
        multipliers: the dense multiplier table of the constraint kind (for a per-sample
            kind the same values as ``per_sample["multiplier"]``).
        hardest: for an image task, the training samples with the largest multipliers
            (then losses) as images, with label, loss and multiplier; else ``None``.
    """

    trial_id: str
    method: str
    history: list[dict[str, float]]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    multipliers: np.ndarray | None = None
    hardest: HardestSamples | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


@dataclass(frozen=True)
class UnitEvalReport:
    """Handed to a unit's reporter after each evaluation: the metrics of the members that
    are still training, every member that diverged so far, and lazy state access (a unit of
    one trial reports the same way, with one member)."""

    epoch: int
    metrics: dict[str, dict[str, float]]
    """Per active member: the metrics an unpacked trial reports."""
    diverged: dict[str, Diverged]
    is_last: bool
    trainer: UnitTrainer
    results: Callable[[str], TrialResult]
    """An active member's ``TrialResult`` as it stands now (what it ends with if the reporter
    stops it here)."""

    def state_dict(self) -> dict[str, Any]:
        """The unit's state: each active member's single-trial state and the diverged."""
        return self.trainer.state_dict()

    def per_sample(self, trial_id: str) -> dict[str, np.ndarray]:
        return self.trainer.per_sample(trial_id)

    def result(self, trial_id: str) -> TrialResult:
        return self.results(trial_id)


UnitReporter = Callable[[UnitEvalReport], Collection[str] | None]
"""Called after every evaluation; returns the members to stop there (early stopping), which
then end with their ``TrialResult`` of this evaluation, or ``None`` for none."""


@dataclass
class UnitResult:
    """The outcome of ``core.engine.fit.fit_unit``: a ``TrialResult`` per member that
    finished, the error of each member that diverged, and the ``TrialResult`` of each member
    the reporter stopped early (at the evaluation it was stopped at)."""

    results: dict[str, TrialResult]
    diverged: dict[str, Diverged]
    stopped: dict[str, TrialResult] = field(default_factory=dict)
