"""The trainer: one trial's model, optimizers, multipliers and loop, with exact resume."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.engine.build import (
    build_constraint_kind,
    build_dual_optimizer,
    build_method,
    build_primal_optimizer,
    constraint_epsilon,
    resolve_device,
)
from core.engine.constraints import Batch
from core.engine.errors import Diverged
from core.engine.evaluation import SplitEvaluation, evaluate_split
from core.engine.multipliers import Multipliers
from core.engine.observation import Observation
from core.engine.step import PrimalDualStep
from core.metrics import tail
from core.spec import TrialConfig
from core.tasks import load_task

STATE_VERSION = 1


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
        self.data = self.task.load().to(self.device)
        self.seed = int(config.value("seed"))
        torch.manual_seed(self.seed)
        self.model = self.task.make_model(self.data).to(self.device)
        self.kind = build_constraint_kind(config, self.data, self.model)
        self.epsilon = constraint_epsilon(config, self.kind)
        self.method = build_method(config, self.kind)
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
        return Observation(
            objective=self.kind.objective(self.task, self.model, losses),
            erm_loss=losses.mean(),
            constraint=self.kind.observe(self.task, self.model, output, batch),
        )

    def batches(self) -> Iterator[Batch]:
        """This epoch's batches, in the order the trial's generator draws them; each batch
        is sliced when it is needed, so an epoch never copies the whole dataset."""
        train = self.data.train
        order = torch.randperm(train.n, generator=self.generator).to(self.device)
        size = self.config.train.batch_size
        for start in range(0, train.n, size):
            idx = order[start : start + size]
            yield Batch(
                self.task.augment(train.x.index_select(0, idx), self.generator),
                train.y.index_select(0, idx),
                idx,
                {k: v.index_select(0, idx) for k, v in train.groups.items()},
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
        metrics: dict[str, Tensor] = {}
        for name in ("train", "val"):
            split = getattr(self.data, name)
            ev = evaluate_split(
                self.task, self.model, self.kind, split, prefix=name, epsilon=self.epsilon
            )
            self._last_eval[name] = ev
            metrics.update(ev.metrics)
        metrics.update(
            {f"dual/{k}": v for k, v in tail.multiplier_stats(self.multipliers.value).items()}
        )
        violation = tail.violation(
            self._last_eval["train"].constraint_values, self.epsilon, equality=self.kind.equality
        )
        metrics["constraint/violation_max"] = (
            violation.max() if violation.numel() else violation.new_zeros(())
        )
        metrics["constraint/violation_mean"] = (
            violation.mean() if violation.numel() else violation.new_zeros(())
        )
        values = tail.to_floats(metrics)
        if not np.isfinite(values["train/loss_mean"]):
            raise Diverged(self.epoch, "non-finite training loss at evaluation")
        seconds = self._train_seconds / max(self._epochs_timed, 1)
        values["time/epoch_s"] = seconds
        values["time/samples_per_s"] = self.data.train.n / seconds if seconds > 0 else 0.0
        values["epoch"] = float(self.epoch)
        self._train_seconds, self._epochs_timed = 0.0, 0
        return values

    def per_sample(self) -> dict[str, np.ndarray]:
        """Per-sample arrays from the last evaluation (evaluates now if there was none)."""
        if not self._last_eval:
            self.evaluate()
        out: dict[str, np.ndarray] = {}
        for name in ("train", "val"):
            split = getattr(self.data, name)
            out[f"{name}_loss"] = self._last_eval[name].losses.detach().cpu().numpy()
            out[f"{name}_label"] = split.y.detach().cpu().numpy()
            for attribute, codes in split.groups.items():
                out[f"{name}_group_{attribute}"] = codes.detach().cpu().numpy()
        if self.config.constraint.kind == "sample_loss":
            out["multiplier"] = self.multipliers.value.detach().cpu().numpy()
        return out

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
        self.primal_optimizer.load_state_dict(state["primal_optimizer"])
        self.multipliers.load_state_dict(state["multipliers"])
        self.dual_optimizer.load_state_dict(state["dual_optimizer"])
        self.method.load_state_dict(state["method"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
