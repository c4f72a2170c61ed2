"""``layer_descent``: g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l, one per block transition of a model
with a readout after every block (``ReadoutModel``); ε folded into g."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_constraints import LayerDescentConstraint
from dualtune.core.engine.constraints.base import Batch, ConstraintKind, KindContext
from dualtune.core.engine.forward import forward_split
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


@runtime_checkable
class ReadoutModel(Protocol):
    """A model with a readout after every block (``core.tasks.readout_models``)."""

    @property
    def num_readouts(self) -> int: ...

    def forward_readouts(self, x: Tensor) -> Tensor:
        """The readouts after every block, stacked: (L, B, C)."""
        ...

    def take_readouts(self, x: Tensor, output: Tensor) -> Tensor:
        """The readouts of the forward pass that returned ``output`` on ``x``."""
        ...


def readout_model(model: nn.Module) -> ReadoutModel:
    if not isinstance(model, ReadoutModel):
        raise ValueError(
            "layer_descent constraints need a model with a readout after every block "
            f"(forward_readouts); {type(model).__name__} has none"
        )
    return model


def layer_losses(task: Task, readouts: Tensor, y: Tensor) -> Tensor:
    """The task's per-sample loss of every readout: (L, B, C) readouts → (L, B) losses."""
    depth, n = readouts.shape[0], readouts.shape[1]
    # y may hold one value per sample (labels) or a row per sample (image targets).
    repeated = y.repeat(depth, *([1] * (y.dim() - 1)))
    losses = task.per_sample_loss(readouts.reshape(depth * n, -1), repeated)
    return losses.reshape(depth, n)


class LayerDescent(ConstraintKind):
    """Layerwise descent: g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l ≤ 0 for l = 0..L−2, with ℓ̄_l the
    mean loss of the readout after block l (on the batch when training, on the split for
    metrics). ε is folded into g, so the method's ε is 0 (``uses_epsilon`` is false) and
    ``feasible_frac`` is the share of transitions that descend by the factor (1 − ε).

    The objective is the mean loss of the final readout (the model's output). Metrics:
    ``descent_frac``, the share of samples whose loss strictly decreases at every block
    transition; ``noisy_accuracy`` (classification tasks only), the final readout's accuracy
    on inputs plus Gaussian noise of std ``noise_std``, drawn from a generator seeded with
    ``noise_seed`` so it is the same noise at every evaluation of a split.
    """

    uses_epsilon = False

    def __init__(
        self, num_readouts: int, *, epsilon: float, noise_std: float, noise_seed: int = 0
    ) -> None:
        if num_readouts < 2:
            raise ValueError(
                f"layer_descent needs at least 2 readouts (blocks), got {num_readouts}"
            )
        if not epsilon < 1:
            raise ValueError(f"layer_descent needs ε < 1, got {epsilon}")
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be ≥ 0, got {noise_std}")
        self.num_readouts = num_readouts
        self.epsilon = float(epsilon)
        self.noise_std = float(noise_std)
        self.noise_seed = noise_seed
        self._split_cache: tuple[Tensor, Tensor] | None = None

    @classmethod
    def from_spec(cls, params: LayerDescentConstraint, context: KindContext) -> LayerDescent:
        # The kind folds ε into g = ℓ̄_{l+1} − (1 − ε)ℓ̄_l ≤ 0; the method then runs at ε = 0.
        return cls(
            readout_model(context.model).num_readouts,
            epsilon=context.epsilon,
            noise_std=params.noise_std,
        )

    def num_constraints(self) -> int:
        return self.num_readouts - 1

    def descent(self, layer_means: Tensor) -> Tensor:
        """g_l = m_{l+1} − (1 − ε) m_l from the per-layer mean losses m."""
        return layer_means[1:] - (1.0 - self.epsilon) * layer_means[:-1]

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        readouts = readout_model(model).take_readouts(batch.x, output)
        return ConstraintBatch(self.descent(layer_losses(task, readouts, batch.y).mean(dim=1)))

    def split_losses(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        """(L, n) per-sample losses of every readout on a split. ``evaluate`` and
        ``extra_metrics`` of one evaluation receive the same ``output``: computed once."""
        if self._split_cache is not None and self._split_cache[0] is output:
            return self._split_cache[1]
        with torch.no_grad():
            readouts = forward_split(
                model, split.x, task.eval_chunk, readout_model(model).forward_readouts, dim=1
            )
            losses = layer_losses(task, readouts, split.y)
        self._split_cache = (output, losses)
        return losses

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return self.descent(self.split_losses(task, model, output, split).mean(dim=1))

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        losses = self.split_losses(task, model, output, split)
        self._split_cache = None  # evaluate_split calls this last: free the split's tensors
        descends = (losses[1:] < losses[:-1]).all(dim=0)
        metrics = {f"{prefix}/descent_frac": descends.to(losses.dtype).mean()}
        if task.problem != "classification":
            return metrics  # accuracy needs decisions; a regression task has none
        generator = torch.Generator().manual_seed(self.noise_seed)
        noise = torch.randn(split.x.shape, generator=generator, dtype=split.x.dtype)
        noisy = split.x + self.noise_std * noise.to(split.x.device)
        predicted = task.predictions(forward_split(model, noisy, task.eval_chunk))
        metrics[f"{prefix}/noisy_accuracy"] = (predicted == split.y).to(losses.dtype).mean()
        return metrics
