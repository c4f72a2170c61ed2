"""``pinn_residual``: h_k = w_k·mean(res_k²) = 0 for a PDE task's residuals (IC, BC, PDE),
which the task computes with input derivatives (``ResidualTask``); the objective is 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import PinnResidualConstraint
from dualtune.core.engine.constraints.base import Batch, ConstraintKind, KindContext
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


@runtime_checkable
class ResidualTask(Protocol):
    """A task that states a PDE problem: its residuals at a batch of input points."""

    def residuals(self, model: nn.Module, x: Tensor, *, create_graph: bool = True) -> Tensor:
        """The mean squared residuals (one per condition, e.g. IC, BC, PDE) of ``model`` at
        the points ``x``, differentiable in the parameters when ``create_graph``. Each is a
        mean over the rows of ``x`` (conditions derived row by row), so a split can be
        evaluated in chunks."""
        ...


class PinnResidual(ConstraintKind):
    """w_k·mean(res_k²) = 0 for each residual k of a PDE task, with a zero objective.

    Residuals need derivatives of the model in its inputs, so the kind evaluates the model
    itself (through the task) rather than using the trainer's forward pass, also on a split:
    metrics run under ``no_grad``, the residuals under ``enable_grad`` then detached.
    """

    equality = True
    uses_epsilon = False

    def __init__(self, weights: Sequence[float], *, tolerance: float) -> None:
        if not weights or any(not w > 0 for w in weights):
            raise ValueError(f"residual weights must be > 0, got {list(weights)}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
        self.weights = tuple(float(w) for w in weights)
        self._tolerance = float(tolerance)

    @classmethod
    def from_spec(cls, params: PinnResidualConstraint, context: KindContext) -> PinnResidual:
        del context
        return cls(params.weights, tolerance=params.tolerance)

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        return len(self.weights)

    def _weighted(self, task: Task, model: nn.Module, x: Tensor, *, create_graph: bool) -> Tensor:
        if not isinstance(task, ResidualTask):
            raise ValueError(
                f"pinn_residual constraints need a PDE task with residuals; "
                f"{type(task).__name__} has none"
            )
        values = task.residuals(model, x, create_graph=create_graph)
        if values.shape != (len(self.weights),):
            raise ValueError(
                f"{type(task).__name__}.residuals gave shape {tuple(values.shape)}, "
                f"expected ({len(self.weights)},) for {len(self.weights)} weights"
            )
        return values * values.new_tensor(self.weights)

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        return ConstraintBatch(self._weighted(task, model, batch.x, create_graph=True))

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        """The residuals on the whole split, in chunks of ``task.eval_chunk`` points: each
        residual is a mean over the points, so the size-weighted chunk means are exact."""
        total = torch.zeros(len(self.weights), dtype=output.dtype, device=output.device)
        chunk = task.eval_chunk
        with torch.enable_grad():
            for start in range(0, split.n, chunk):
                x = split.x[start : start + chunk]
                values = self._weighted(task, model, x, create_graph=False).detach()
                total += values.to(total.dtype) * x.shape[0]
        return total / max(split.n, 1)

    def objective(self, task: Task, model: nn.Module, losses: Tensor) -> Tensor:
        """Zero: the residual constraints alone define the solution."""
        del task, model
        return losses.new_zeros(())
