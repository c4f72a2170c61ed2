"""The trainer: one trial's model, optimizers, multipliers and loop, with exact resume."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualtune.core.catalog import CONSTRAINT_KINDS
from dualtune.core.engine.build import (
    build_constraint_kind,
    build_dual_optimizer,
    build_method,
    build_primal_optimizer,
    constraint_epsilon,
    resolve_device,
)
from dualtune.core.engine.constraints import Batch
from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.evaluation import (
    SplitEvaluation,
    epoch_timing,
    evaluate_trial,
    per_sample_arrays,
)
from dualtune.core.engine.forward import running_statistics_kept
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.step import PrimalDualStep
from dualtune.core.spec import TrialConfig
from dualtune.core.tasks import Split, Task, load_task
from dualtune.core.tasks.shared_data import load_data

STATE_VERSION = 1


def draw_batches(
    task: Task, train: Split, batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """One epoch's batches in the order ``generator`` draws them (augmented by the task);
    each batch is sliced when it is needed, so an epoch never copies the whole dataset."""
    order = torch.randperm(train.n, generator=generator).to(train.x.device)
    for start in range(0, train.n, batch_size):
        idx = order[start : start + batch_size]
        yield Batch(
            task.augment(train.x.index_select(0, idx), generator),
            train.y.index_select(0, idx),
            idx,
            {k: v.index_select(0, idx) for k, v in train.groups.items()},
        )


class Trainer:
    """Trains one trial. Its whole state round-trips through ``state_dict``.

    Batches are drawn from a per-trial ``torch.Generator`` (seeded by the trial seed) and
    carry their sample indices, so per-sample multipliers are read and written exactly at
    the sampled rows. The loop never synchronises with the device inside an epoch: the
    divergence check reads one accumulated value at the end of the epoch.
    """

    def __init__(self, config: TrialConfig) -> None:
        self.config = config
        self.device = resolve_device(config.train.device)
        self.task = load_task(config.task.name, config.task.params)
        self.data = load_data(self.task, config.task.name).to(self.device)
        self.seed = int(config.value("seed"))
        torch.manual_seed(self.seed)
        self.model = self.task.make_model(self.data).to(self.device)
        self.kind = build_constraint_kind(config, self.data, self.model, task=self.task)
        self._values_are_losses = self.kind.values_are_losses(self.task)
        """The constraint values of a batch are its losses: computed once per step."""
        self.per_sample_kind = CONSTRAINT_KINDS[config.constraint.kind].per_sample
        self.epsilon = constraint_epsilon(config, self.kind)
        self.method = build_method(config, self.kind, n_train=len(self.data.train.y))
        dtype = next(self.model.parameters()).dtype
        size = self.kind.num_constraints()
        self.multipliers = Multipliers(
            size,
            equality=self.kind.equality,
            init=config.dual.init,
            device=self.device,
            dtype=dtype,
        )
        self.dual_optimizer = build_dual_optimizer(config, size, self.device, dtype)
        self.primal_optimizer = build_primal_optimizer(config, self.model)
        self.step = PrimalDualStep(
            self.method,
            self.primal_optimizer,
            self.multipliers,
            self.dual_optimizer,
            config.dual.scheme,
            restart=config.dual.restart,
            keep_statistics=functools.partial(running_statistics_kept, self.model),
        )
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self._train_seconds = 0.0
        self._epochs_timed = 0
        self._last_eval: dict[str, SplitEvaluation] = {}

    # -- training
    def _observe(self, batch: Batch) -> Observation:
        output = self.model(batch.x)
        losses = self.task.per_sample_loss(output, batch.y)
        constraint = (
            ConstraintBatch(losses, batch.index)
            if self._values_are_losses
            else self.kind.observe(self.task, self.model, output, batch)
        )
        return Observation(
            objective=self.kind.objective(self.task, self.model, losses),
            erm_loss=losses.mean(),
            constraint=constraint,
        )

    def batches(self) -> Iterator[Batch]:
        """This epoch's batches, in the order the trial's generator draws them."""
        return draw_batches(
            self.task, self.data.train, self.config.train.batch_size, self.generator
        )

    def train_epoch(self) -> None:
        """One pass over the training data. Raises ``Diverged`` on a non-finite loss."""
        self.model.train()
        started = time.perf_counter()
        total: Tensor | None = None
        for batch in self.batches():
            out = self.step(functools.partial(self._observe, batch))
            total = out.loss if total is None else total + out.loss
        self.epoch += 1
        if total is not None and not bool(torch.isfinite(total)):
            raise Diverged(self.epoch)
        self._train_seconds += time.perf_counter() - started
        self._epochs_timed += 1

    # -- evaluation
    def evaluate(self) -> dict[str, float]:
        """Every metric of ARCHITECTURE §3.4 on train and val, as floats."""
        ev = evaluate_trial(
            self.task,
            self.model,
            self.kind,
            self.data,
            self.multipliers.value,
            epsilon=self.epsilon,
        )
        self._last_eval = ev.splits
        values = ev.metrics
        if not np.isfinite(values["train/loss_mean"]):
            raise Diverged(self.epoch, "non-finite training loss at evaluation")
        values.update(
            epoch_timing(
                self._train_seconds, self._epochs_timed, self.data.train.n, epoch=self.epoch
            )
        )
        values["epoch"] = float(self.epoch)
        self._train_seconds, self._epochs_timed = 0.0, 0
        return values

    def per_sample(self) -> dict[str, np.ndarray]:
        """Per-sample arrays from the last evaluation (evaluates now if there was none)."""
        if not self._last_eval:
            self.evaluate()
        return per_sample_arrays(
            self.data, self._last_eval, self.multipliers.value if self.per_sample_kind else None
        )

    # -- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, primal and dual optimizer states,
        multipliers, method state (SAL's ρ), the batch-order and global RNG, the epoch and
        the metric history."""
        return {
            "version": STATE_VERSION,
            "trial_id": self.config.trial_id,
            "epoch": self.epoch,
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "primal_optimizer": self.primal_optimizer.state_dict(),
            "multipliers": self.multipliers.state_dict(),
            "dual_optimizer": self.dual_optimizer.state_dict(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported trainer state version {state.get('version')!r}")
        if state.get("trial_id") != self.config.trial_id:
            raise ValueError(
                f"state is for trial {state.get('trial_id')!r}, not {self.config.trial_id!r}"
            )
        self.model.load_state_dict(state["model"])
        primal = state["primal_optimizer"]
        if primal.get("param_groups") is None:  # a pack member's: settings from the config
            primal = {**primal, "param_groups": self.primal_optimizer.state_dict()["param_groups"]}
        self.primal_optimizer.load_state_dict(primal)
        self.multipliers.load_state_dict(state["multipliers"])
        self.dual_optimizer.load_state_dict(state["dual_optimizer"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
