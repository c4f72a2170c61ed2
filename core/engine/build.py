"""Build the engine's parts for one trial from its ``TrialConfig``."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from dualtune.core.catalog import CONSTRAINT_KINDS, METHODS, ConstraintKindInfo
from dualtune.core.engine.constraints import ConstraintKind, KindContext
from dualtune.core.engine.dual_optimizers import DualOptimizer, GradientAscent, NuPI
from dualtune.core.engine.methods import ALM, CSERM, ERM, FL, RFL, SAL, Method, Penalty
from dualtune.core.spec import TrialConfig
from dualtune.core.tasks import load_task
from dualtune.core.tasks.base import Dataset, Task


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible (a Ray GPU worker), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but no CUDA device is visible; use 'auto'")
    return device


def constraint_kind_class(info: ConstraintKindInfo) -> type[ConstraintKind]:
    """The builder class a catalog entry names (``module:Class``), imported now."""
    module_name, _, class_name = info.builder.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"constraint kind {info.name!r}: cannot import its builder {info.builder!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, ConstraintKind)):
        raise TypeError(
            f"constraint kind {info.name!r}: builder {info.builder!r} is not a "
            "dualtune.ConstraintKind subclass"
        )
    return cls


def build_constraint_kind(
    config: TrialConfig, data: Dataset, model: nn.Module, *, task: Task | None = None
) -> ConstraintKind:
    """The trial's constraint kind, built by the builder its catalog entry names from the
    trial's ``constraint:`` section (``task`` defaults to the trial's, loaded anew)."""
    name = config.constraint.kind
    info = CONSTRAINT_KINDS.get(name)
    if info is None:
        raise ValueError(
            f"unknown constraint kind {name!r}; valid kinds: {', '.join(CONSTRAINT_KINDS)}"
        )
    context = KindContext(
        config,
        task if task is not None else load_task(config.task.name, config.task.params),
        data,
        model,
        epsilon=float(config.value("epsilon")),
    )
    kind = constraint_kind_class(info).from_spec(config.constraint, context)
    if not isinstance(kind, ConstraintKind):
        raise TypeError(
            f"constraint kind {name!r}: {info.builder}.from_spec returned "
            f"{type(kind).__name__}, not a ConstraintKind"
        )
    if info.needs_group_attribute and kind.group_attribute is None:
        kind.group_attribute = getattr(config.constraint, "attribute", None)
    if info.per_sample and data is not None and kind.num_constraints() != data.train.n:
        raise ValueError(
            f"constraint kind {name!r} is per-sample but has {kind.num_constraints()} "
            f"constraints for {data.train.n} training samples"
        )
    return kind


def constraint_epsilon(config: TrialConfig, kind: ConstraintKind) -> float:
    """ε for this trial; 0 for constraints whose target is fixed (equality group rates)."""
    return float(config.value("epsilon")) if kind.uses_epsilon else 0.0


def build_method(
    config: TrialConfig, kind: ConstraintKind, *, n_train: int | None = None
) -> Method:
    """The trial's method. ``n_train``: the training split's size; where a batch is smaller
    and the kind's values are batch estimates (``ConstraintKind.batch_estimates``), ALM's
    and SAL's penalty slopes are read from a running estimate (``DefectEstimate``)."""
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
    # ALM and SAL: a penalty ρ and its per-constraint schedule.
    scheduled = {key: float(v(key)) for key in ("rho", "rho_growth", "rho_max")}
    cls = ALM if name == "alm" else SAL
    estimates = kind.batch_estimates and n_train is not None and config.train.batch_size < n_train
    return cls(
        **scheduled,
        size=kind.num_constraints(),
        epsilon=eps,
        equality=eq,
        batch_estimates=estimates,
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
