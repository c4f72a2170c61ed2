"""Constraint kinds: turn a model's outputs into constraint values g_j(θ).

Each kind says how many constraints (and multipliers) it has, what it observes on a
training batch (differentiable, with the multiplier indices it touches), what the full
constraint vector is on a data split (for metrics), and what the objective is next to it.

* ``sample_loss``   g_i = ℓ_i(θ) (or the task's own g_i), one per training sample.
* ``group_rate``    h_g = r_g − r: soft positive rate of group g minus the overall rate,
                    r = mean σ(τ(p − ½)) as in the statistical-equality code (τ = 8). With
                    ``equality`` the constraints are h_g = 0; otherwise |h_g| ≤ ε as the two
                    inequalities h_g ≤ ε and −h_g ≤ ε (2G multipliers). Metrics use the hard
                    rates (share of predictions of class 1).
* ``class_loss``    g_k = mean loss of class k, one per class (only classes in the batch
                    are observed).
* ``weight_norm``   g_l = ‖W_l‖²_F, one per weight matrix (parameters with ≥ 2 dims).
* ``orthogonality`` g_l = ‖W_l W_lᵀ − I‖_F with W_l reshaped to (out, −1) and the Gram of
                    its smaller side, so a non-square layer can be feasible at ε = 0.
* ``pinn_residual`` h_k = w_k·mean(res_k²) = 0 for a PDE task's residuals (IC, BC, PDE),
                    which the task computes with input derivatives (``ResidualTask``);
                    the objective is 0.
* ``layer_descent`` g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l, one per block transition of a model with
                    a readout after every block (``ReadoutModel``); ε folded into g.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dualtune.core.engine.forward import forward_split
from dualtune.core.engine.observation import ConstraintBatch
from dualtune.core.tasks.base import Split, Task


@dataclass(frozen=True)
class Batch:
    x: Tensor
    y: Tensor
    index: Tensor
    """Sample indices into the training split."""
    groups: dict[str, Tensor] = field(default_factory=dict)


class ConstraintKind(ABC):
    """How a constraint kind evaluates; see the module docstring for each kind's g."""

    equality: bool = False
    uses_epsilon: bool = True

    @abstractmethod
    def num_constraints(self) -> int: ...

    @abstractmethod
    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        """The constraints observed on a training batch (differentiable)."""

    @abstractmethod
    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        """All constraint values on a whole split (for metrics; no gradients needed)."""

    def extra_metrics(
        self, task: Task, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        """Metrics beyond ARCHITECTURE §3.4, named ``<prefix>/<name>``; each name must be
        listed in the catalog's ``ConstraintKindInfo.extra_metrics``. Called without
        gradients."""
        del task, model, output, split, prefix
        return {}

    def objective(self, task: Task, model: nn.Module, losses: Tensor) -> Tensor:
        """What constrained methods minimise next to the constraints: the mean loss."""
        del task, model
        return losses.mean()

    @property
    def tolerance(self) -> float:
        """How close an equality must be to count as satisfied in the metrics."""
        return 0.0


class SampleLoss(ConstraintKind):
    """ℓ_i(θ) ≤ ε for every training sample (Feasible Learning)."""

    def __init__(self, num_train: int) -> None:
        self._n = num_train

    def num_constraints(self) -> int:
        return self._n

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        return ConstraintBatch(task.sample_constraint(output, batch.y), batch.index)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return task.sample_constraint(output, split.y)

    def objective(self, task: Task, model: nn.Module, losses: Tensor) -> Tensor:
        """Feasible Learning has no objective (0) unless the task defines one."""
        own = task.objective(model)
        return own if own is not None else losses.new_zeros(())


def _group_means(values: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group means of ``values`` and the mask of groups with at least one sample."""
    counts = torch.bincount(groups, minlength=num_groups).to(values.dtype)
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, groups, values)
    present = counts > 0
    return sums / counts.clamp_min(1.0), present


class GroupRate(ConstraintKind):
    """Demographic parity: r_g − r = 0 or |r_g − r| ≤ ε for each group g of an attribute."""

    def __init__(
        self,
        attribute: str,
        num_groups: int,
        *,
        equality: bool,
        temperature: float,
        tolerance: float,
    ) -> None:
        self.attribute = attribute
        self.num_groups = num_groups
        self.equality = equality
        self.uses_epsilon = not equality
        self.temperature = temperature
        self._tolerance = tolerance

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        return self.num_groups if self.equality else 2 * self.num_groups

    def _gaps(self, rates_of: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        group_rates, present = _group_means(rates_of, groups, self.num_groups)
        return group_rates - rates_of.mean(), present

    def _expand(self, gaps: Tensor) -> Tensor:
        return gaps if self.equality else torch.cat([gaps, -gaps])

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        soft = torch.sigmoid(self.temperature * (task.positive_score(output) - 0.5))
        gaps, present = self._gaps(soft, batch.groups[self.attribute])
        observed = torch.nonzero(present).flatten()
        if not self.equality:
            observed = torch.cat([observed, observed + self.num_groups])
        return ConstraintBatch(self._expand(gaps).index_select(0, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        hard = (task.predictions(output) == 1).to(output.dtype)
        gaps, present = self._gaps(hard, split.groups[self.attribute])
        return self._expand(gaps[present])


class ClassLoss(ConstraintKind):
    """Per-class mean loss ≤ ε (or = ε)."""

    def __init__(self, num_classes: int, *, equality: bool, tolerance: float) -> None:
        self.num_classes = num_classes
        self.equality = equality
        self._tolerance = tolerance

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def num_constraints(self) -> int:
        return self.num_classes

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        losses = task.per_sample_loss(output, batch.y)
        means, present = _group_means(losses, batch.y.long(), self.num_classes)
        observed = torch.nonzero(present).flatten()
        return ConstraintBatch(means.index_select(0, observed), observed)

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        means, present = _group_means(
            task.per_sample_loss(output, split.y), split.y.long(), self.num_classes
        )
        return means[present]


def weight_matrices(model: nn.Module) -> list[Tensor]:
    """The parameters with two or more dimensions (linear and conv weights), in order."""
    return [p for p in model.parameters() if p.ndim >= 2]


class WeightNorm(ConstraintKind):
    """‖W_l‖²_F ≤ ε for each weight matrix."""

    def __init__(self, model: nn.Module) -> None:
        self._m = len(weight_matrices(model))

    def num_constraints(self) -> int:
        return self._m

    def _values(self, model: nn.Module) -> Tensor:
        return torch.stack([w.pow(2).sum() for w in weight_matrices(model)])

    def observe(
        self, task: Task, model: nn.Module, output: Tensor, batch: Batch
    ) -> ConstraintBatch:
        return ConstraintBatch(self._values(model))

    def evaluate(self, task: Task, model: nn.Module, output: Tensor, split: Split) -> Tensor:
        return self._values(model)


def gram_defect(weight: Tensor) -> Tensor:
    """‖G − I‖_F with G the Gram matrix of the smaller side of W reshaped to (out, −1)."""
    w = weight.reshape(weight.shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    defect: Tensor = torch.linalg.matrix_norm(gram - eye)
    return defect


class Orthogonality(WeightNorm):
    """‖W_l W_lᵀ − I‖_F ≤ ε for each weight matrix (Gram of the smaller side)."""

    def _values(self, model: nn.Module) -> Tensor:
        return torch.stack([gram_defect(w) for w in weight_matrices(model)])


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
    losses = task.per_sample_loss(readouts.reshape(depth * n, -1), y.repeat(depth))
    return losses.reshape(depth, n)


class LayerDescent(ConstraintKind):
    """Layerwise descent: g_l = ℓ̄_{l+1} − (1 − ε) ℓ̄_l ≤ 0 for l = 0..L−2, with ℓ̄_l the
    mean loss of the readout after block l (on the batch when training, on the split for
    metrics). ε is folded into g, so the method's ε is 0 (``uses_epsilon`` is false) and
    ``feasible_frac`` is the share of transitions that descend by the factor (1 − ε).

    The objective is the mean loss of the final readout (the model's output). Metrics:
    ``descent_frac``, the share of samples whose loss strictly decreases at every block
    transition; ``noisy_accuracy``, the final readout's accuracy on inputs plus Gaussian
    noise of std ``noise_std``, drawn from a generator seeded with ``noise_seed`` so it is
    the same noise at every evaluation of a split.
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
        generator = torch.Generator().manual_seed(self.noise_seed)
        noise = torch.randn(split.x.shape, generator=generator, dtype=split.x.dtype)
        noisy = split.x + self.noise_std * noise.to(split.x.device)
        predicted = task.predictions(forward_split(model, noisy, task.eval_chunk))
        return {
            f"{prefix}/descent_frac": descends.to(losses.dtype).mean(),
            f"{prefix}/noisy_accuracy": (predicted == split.y).to(losses.dtype).mean(),
        }
