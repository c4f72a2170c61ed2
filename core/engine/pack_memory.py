"""How much memory one member of a pack needs: the basis of ``pack: auto``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dualtune.core.engine.build import build_constraint_kind
from dualtune.core.spec import TrialConfig
from dualtune.core.tasks import load_task
from dualtune.core.tasks.shared_data import load_data

OPTIMIZER_STATES = {"adam": 2, "adamw": 2}
"""Per-parameter state tensors of each primal optimizer (SGD: 1 with momentum, else 0)."""


def _activation_elements(model: nn.Module, x: Tensor) -> int:
    """Elements of every module output of one forward pass on ``x`` (what autograd keeps
    for the backward pass, roughly)."""
    total = 0

    def count(module: nn.Module, inputs: object, output: object) -> None:
        del module, inputs
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel()

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def member_bytes(config: TrialConfig) -> int:
    """An estimate of the memory one member of ``config``'s pack adds: its parameters,
    their gradients and optimizer state, its multipliers (and νPI's two per-entry tensors),
    and the activations of one training batch (forward outputs, their gradients and the
    per-member loss terms). The shared data is not counted: a pack holds it once."""
    task = load_task(config.task.name, config.task.params)
    data = load_data(task, config.task.name)
    torch.manual_seed(0)
    model = task.make_model(data)
    params = sum(p.numel() for p in model.parameters())
    itemsize = next(model.parameters()).element_size()
    opt = config.train.optimizer
    states = OPTIMIZER_STATES.get(opt.name, 1 if opt.momentum else 0)
    kind = build_constraint_kind(config, data, model, task=task)
    per_entry = 3 if config.dual.optimizer.name == "nupi" else 1
    batch = data.train.x[: config.train.batch_size]
    activations = 2 * _activation_elements(model, batch) + 4 * batch.shape[0]
    return itemsize * (params * (2 + states) + kind.num_constraints() * per_entry + activations)
