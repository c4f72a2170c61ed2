"""``sample_loss``: g_i = ℓ_i(θ) (or the task's own g_i) ≤ ε, one per training sample."""

from __future__ import annotations

from torch import Tensor, nn

from dualtune.core.catalog.constraints import ConstraintParams
from dualtune.core.engine.constraints.base import Batch, ConstraintKind, KindContext
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


class SampleLoss(ConstraintKind):
    """ℓ_i(θ) ≤ ε for every training sample (Feasible Learning)."""

    def __init__(self, num_train: int) -> None:
        self._n = num_train

    @classmethod
    def from_spec(cls, params: ConstraintParams, context: KindContext) -> SampleLoss:
        del params
        return cls(context.data.train.n)

    def num_constraints(self) -> int:
        return self._n

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        return ConstraintBatch(task.sample_constraint(output, batch.y), batch.index)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return task.sample_constraint(output, split.y)

    def values_are_losses(self, task: Task) -> bool:
        # Task.sample_constraint is the loss; a kind or task that overrides it is not.
        return (
            type(self).observe is SampleLoss.observe
            and type(task).sample_constraint is Task.sample_constraint
        )

    def objective(self, task: Task, model: nn.Module, losses: Tensor) -> Tensor:
        """Feasible Learning has no objective (0) unless the task defines one."""
        own = task.objective(model)
        return own if own is not None else losses.new_zeros(())
