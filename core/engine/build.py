"""Build the engine's parts for one trial from its ``TrialConfig``."""

from __future__ import annotations

import torch
from torch import nn

from dualtune.core.catalog import METHODS
from dualtune.core.engine.constraints import (
    ClassLoss,
    ConstraintKind,
    GroupRate,
    LayerDescent,
    Orthogonality,
    PinnResidual,
    SampleLoss,
    WeightNorm,
    readout_model,
)
from dualtune.core.engine.dual_optimizers import DualOptimizer, GradientAscent, NuPI
from dualtune.core.engine.methods import ALM, CSERM, ERM, FL, RFL, SAL, Method, Penalty
from dualtune.core.spec import TrialConfig
from dualtune.core.tasks.base import Dataset


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible (a Ray GPU worker), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but no CUDA device is visible; use 'auto'")
    return device


def build_constraint_kind(config: TrialConfig, data: Dataset, model: nn.Module) -> ConstraintKind:
    c = config.constraint
    if c.kind == "sample_loss":
        return SampleLoss(data.train.n)
    if c.kind == "group_rate":
        names = data.group_names.get(c.attribute)
        if names is None:
            raise ValueError(f"task {config.task.name!r} has no group attribute {c.attribute!r}")
        return GroupRate(
            c.attribute,
            len(names),
            equality=c.equality,
            temperature=c.temperature,
            tolerance=c.tolerance,
        )
    if c.kind == "class_loss":
        if data.num_classes is None:
            raise ValueError("class_loss constraints need a classification task")
        return ClassLoss(data.num_classes, equality=c.equality, tolerance=c.tolerance)
    if c.kind == "weight_norm":
        return WeightNorm(model)
    if c.kind == "orthogonality":
        return Orthogonality(model)
    if c.kind == "pinn_residual":
        return PinnResidual(c.weights, tolerance=c.tolerance)
    if c.kind == "layer_descent":
        # The kind folds ε into g = ℓ̄_{l+1} − (1 − ε)ℓ̄_l ≤ 0; the method then runs at ε = 0.
        return LayerDescent(
            readout_model(model).num_readouts,
            epsilon=float(config.value("epsilon")),
            noise_std=c.noise_std,
        )
    raise ValueError(f"unknown constraint kind {c.kind!r}")


def constraint_epsilon(config: TrialConfig, kind: ConstraintKind) -> float:
    """ε for this trial; 0 for constraints whose target is fixed (equality group rates)."""
    return float(config.value("epsilon")) if kind.uses_epsilon else 0.0


def build_method(config: TrialConfig, kind: ConstraintKind) -> Method:
    name = config.method
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    eps, eq = constraint_epsilon(config, kind), kind.equality
    v = config.value
    if name == "erm":
        return ERM(epsilon=eps, equality=eq)
    if name == "penalty":
        return Penalty(penalty=float(v("penalty")), epsilon=eps, equality=eq)
    if name == "cserm":
        return CSERM(epsilon=eps, equality=eq)
    if name == "fl":
        return FL(epsilon=eps, equality=eq)
    if name == "rfl":
        return RFL(alpha=float(v("alpha")), epsilon=eps, equality=eq)
    if name == "alm":
        return ALM(rho=float(v("rho")), epsilon=eps, equality=eq)
    return SAL(
        rho=float(v("rho")),
        rho_growth=float(v("rho_growth")),
        rho_max=float(v("rho_max")),
        epsilon=eps,
        equality=eq,
    )


def build_dual_optimizer(
    config: TrialConfig, size: int, device: torch.device, dtype: torch.dtype
) -> DualOptimizer:
    if config.method == "sal":
        # SAL's multiplier update is λ ← Π[λ + ρ(g − ε)]: the step is ρ itself.
        return GradientAscent(lr=1.0)
    lr = float(config.value("dual_lr"))
    opt = config.dual.optimizer
    if opt.name == "ga":
        return GradientAscent(lr=lr)
    return NuPI(
        lr,
        size,
        kp=float(config.value("kp")),
        ki=opt.ki,
        nu=float(config.value("nu")),
        init=opt.init,
        device=device,
        dtype=dtype,
    )


def build_primal_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.train.optimizer
    lr = float(config.value("lr"))
    params = list(model.parameters())
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=opt.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=opt.weight_decay)
