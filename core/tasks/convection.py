"""The 1-D convection problem as a physics-informed network (statistical-equality paper §(c)).

u_t + β u_x = 0 on x ∈ [0, 2π], t ∈ [0, 1], u(x, 0) = sin x, u(0, t) = u(2π, t); the exact
solution is u* = sin(x − βt). The model maps (x, t) to u. The residuals at a batch of points
(x_i, t_i) are

* IC:  u(x_i, 0) − sin x_i          (the batch's x at t = 0)
* BC:  u(0, t_i) − u(2π, t_i)       (the batch's t at both ends)
* PDE: u_t + β u_x at (x_i, t_i)    (autograd in the inputs)

so one batch of collocation points yields all three and needs no randomness of its own.
The train split holds ``n_collocation`` uniform points; with ``resample`` every batch is
replaced by fresh uniform points (``augment``), as the paper resamples each iteration.
The val split is a regular grid. Both carry u* as the target: the per-sample loss (u − u*)²
and ``rel_l2`` = ‖u − u*‖₂ / ‖u*‖₂ are metrics only. The constrained methods never see u*
(the ``pinn_residual`` kind has a zero objective); ERM would fit it, so the catalog does
not offer ERM here. On resampled batches the targets no longer match the points, which
only the unused ERM loss would read.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from dualtune.core.catalog.builtin_tasks import ConvectionParams
from dualtune.core.tasks.base import Dataset, Split, Task, cached_by_params
from dualtune.core.tasks.models import as_tensor, mlp

LENGTH = 2 * math.pi
DURATION = 1.0


def exact_solution(points: np.ndarray, beta: float) -> np.ndarray:
    """u*(x, t) = sin(x − βt) at rows (x, t)."""
    return np.sin(points[:, 0] - beta * points[:, 1])


def grid_points(n_x: int, n_t: int) -> np.ndarray:
    """The regular (x, t) grid: x without its right end (periodic), t with both ends."""
    x = np.linspace(0.0, LENGTH, n_x, endpoint=False)
    t = np.linspace(0.0, DURATION, n_t)
    xx, tt = np.meshgrid(x, t, indexing="ij")
    return np.stack([xx.ravel(), tt.ravel()], axis=1)


@cached_by_params
def _load(params: ConvectionParams) -> Dataset:
    rng = np.random.default_rng(params.data_seed)
    train = rng.uniform(0.0, 1.0, (params.n_collocation, 2)) * [LENGTH, DURATION]
    val = grid_points(params.grid_x, params.grid_t)
    return Dataset(
        Split(
            as_tensor(train, torch.float32),
            as_tensor(exact_solution(train, params.beta), torch.float32),
        ),
        Split(
            as_tensor(val, torch.float32),
            as_tensor(exact_solution(val, params.beta), torch.float32),
        ),
        num_classes=None,
    )


def tanh_mlp(in_features: int, hidden: list[int], out_features: int) -> nn.Sequential:
    """Linear + tanh blocks, then a linear readout; Xavier-normal weights and zero biases
    (the usual PINN initialisation)."""
    model = mlp(in_features, hidden, out_features, activation=nn.Tanh)
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


class Convection(Task):
    problem = "regression"
    params: ConvectionParams

    def load(self) -> Dataset:
        return _load(self.params)

    def pack_blocker(self) -> str | None:
        return "its PDE residuals take input derivatives with torch.autograd.grad"

    def make_model(self, data: Dataset) -> nn.Module:
        return tanh_mlp(2, list(self.params.hidden), 1)

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Fresh uniform collocation points (as many as the batch) when ``resample``."""
        if not self.params.resample:
            return x
        fresh = torch.rand(x.shape, generator=generator, dtype=torch.float64)
        fresh *= torch.tensor([LENGTH, DURATION], dtype=torch.float64)
        return fresh.to(device=x.device, dtype=x.dtype)

    def residuals(self, model: nn.Module, x: Tensor, *, create_graph: bool = True) -> Tensor:
        """(mean res_IC², mean res_BC², mean res_PDE²) at the points ``x`` (rows (x, t)).

        With ``create_graph`` the values are differentiable in the parameters (training);
        without, they are detached (metrics). Needs gradients enabled either way: the PDE
        residual differentiates the model in its inputs.
        """
        points = x.detach().requires_grad_(True)
        u = model(points).reshape(-1)
        (du,) = torch.autograd.grad(u.sum(), points, create_graph=create_graph)
        pde = du[:, 1] + self.params.beta * du[:, 0]
        position, time = points.detach().unbind(dim=1)
        zero = torch.zeros_like(position)
        ends = torch.cat(
            [
                torch.stack([position, zero], dim=1),
                torch.stack([zero, time], dim=1),
                torch.stack([zero + LENGTH, time], dim=1),
            ]
        )
        with torch.set_grad_enabled(create_graph):
            initial, left, right = model(ends).reshape(3, -1).unbind(0)
        ic = initial - torch.sin(position)
        bc = left - right
        values = torch.stack([ic.pow(2).mean(), bc.pow(2).mean(), pde.pow(2).mean()])
        return values if create_graph else values.detach()

    def extra_metrics(
        self, model: nn.Module, output: Tensor, split: Split, prefix: str
    ) -> dict[str, Tensor]:
        """``<prefix>/rel_l2`` = ‖u − u*‖₂ / ‖u*‖₂ on the split's points."""
        error = torch.linalg.vector_norm(output.reshape(split.y.shape) - split.y)
        return {f"{prefix}/rel_l2": error / torch.linalg.vector_norm(split.y)}
