"""The pack trainer: K trials that differ only in scalar hyperparameters, trained together.

A pack's members share the task, the data, the initial model and the batch order (same
seed); they differ in ε, α, dual_lr, ρ, penalty, lr, kp, nu (``core.spec.packs``). Their
parameters are stacked along a leading member dimension and one step runs every member's
forward pass at once with ``torch.func.vmap`` over ``functional_call``; the per-member
primal losses (K,) are summed for one backward pass (the members' parameters are disjoint,
so each gets exactly its own gradient). Multipliers are a (K, m) table, the methods' and
dual optimizers' hyperparameters (K, 1) tensors, and the primal optimizer steps each
member with its own learning rate (``StackedOptimizer``).

Every member stays its own trial: ``member_state_dict`` is exactly the ``Trainer`` state
of that trial (a member can continue unpacked, and an unpacked trial can join a pack), its
metrics come from the same evaluation code, and a member whose loss turns non-finite is
taken out of the pack (``diverged``) while the others go on untouched.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from dualtune.core.catalog import CONSTRAINT_KINDS
from dualtune.core.engine.build import (
    build_constraint_kind,
    build_dual_optimizer,
    build_method,
    constraint_epsilon,
    resolve_device,
)
from dualtune.core.engine.constraints import Batch, ConstraintKind
from dualtune.core.engine.dual_optimizers import stack_dual_optimizers
from dualtune.core.engine.errors import Diverged
from dualtune.core.engine.evaluation import (
    SplitEvaluation,
    epoch_timing,
    evaluate_trial,
    per_sample_arrays,
)
from dualtune.core.engine.methods import stack_methods
from dualtune.core.engine.multipliers import Multipliers
from dualtune.core.engine.observation import ConstraintBatch, Observation
from dualtune.core.engine.stacked_optimizers import stacked_optimizer
from dualtune.core.engine.step import PrimalDualStep
from dualtune.core.engine.trainer import STATE_VERSION, draw_batches
from dualtune.core.spec import TrialConfig
from dualtune.core.spec.packs import kind_pack_blocker, pack_key
from dualtune.core.tasks import Task, load_task
from dualtune.core.tasks.shared_data import load_data

PACK_STATE_VERSION = 1


class NotPackable(ValueError):  # noqa: N818 (reads as a condition, like Diverged)
    """These trials cannot train as one pack; the message says why."""


class _Observer(nn.Module):
    """One member's observation as a module, so that ``functional_call`` swaps the member's
    parameters in for everything that reads the model (the forward pass, a task objective
    such as the SVM's ½‖w‖², weight constraints)."""

    def __init__(self, model: nn.Module, task: Task, kind: ConstraintKind) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.kind = kind
        self.values_are_losses = kind.values_are_losses(task)
        """The constraint values of a batch are its losses: computed once per step."""
        self.index: list[Tensor | None] = [None]
        self.proxy = [False]
        """Whether the kind observed proxy constraints (``ConstraintBatch.dual_values``)."""

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        output = self.model(batch.x)
        losses = self.task.per_sample_loss(output, batch.y)
        constraint = (
            ConstraintBatch(losses, batch.index)
            if self.values_are_losses
            else self.kind.observe(self.task, self.model, output, batch)
        )
        # The observed indices depend on the batch only, never on a member's parameters.
        self.index[0] = constraint.index
        self.proxy[0] = constraint.dual_values is not None
        objective = self.kind.objective(self.task, self.model, losses)
        # vmap returns tensors only: without proxy values the surrogate stands in, unused.
        return objective, losses.mean(), constraint.values, constraint.ascent_values


class PackTrainer:
    """Trains the trials ``configs`` as one pack. Raises ``NotPackable`` when they differ
    in more than the per-member keys or their task or model cannot be vectorised."""

    def __init__(self, configs: Sequence[TrialConfig]) -> None:
        if not configs:
            raise ValueError("a pack needs at least one trial")
        blocker = kind_pack_blocker(configs[0])
        if blocker is not None:
            raise NotPackable(blocker)
        if len({pack_key(c) for c in configs}) != 1:
            raise NotPackable(
                "the trials differ in more than ε, α, dual_lr, ρ, penalty, lr, kp, nu"
            )
        ids = [c.trial_id for c in configs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a pack lists a trial twice: {ids}")
        first = configs[0]
        self.device = resolve_device(first.train.device)
        self.task = load_task(first.task.name, first.task.params)
        blocker = self.task.pack_blocker()
        if blocker is not None:
            raise NotPackable(f"task {first.task.name!r} cannot be packed: {blocker}")
        self.data = load_data(self.task, first.task.name).to(self.device)
        self.seed = int(first.value("seed"))
        torch.manual_seed(self.seed)
        self.model = self.task.make_model(self.data).to(self.device)
        if any(True for _ in self.model.buffers()):
            raise NotPackable(f"task {first.task.name!r}'s model has buffers (e.g. BatchNorm)")
        self.kind = build_constraint_kind(first, self.data, self.model, task=self.task)
        self.per_sample_kind = CONSTRAINT_KINDS[first.constraint.kind].per_sample
        self.dtype = next(self.model.parameters()).dtype
        self._initial = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self._observer = _Observer(self.model, self.task, self.kind)
        self.batch_size = first.train.batch_size
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch = 0
        self.histories: dict[str, list[dict[str, float]]] = {i: [] for i in ids}
        self.diverged: dict[str, Diverged] = {}
        self.stopped: set[str] = set()
        self._last_eval: dict[str, dict[str, SplitEvaluation]] = {}
        self._train_seconds = 0.0
        self._epochs_timed = 0
        self._assemble(list(configs))

    # -- the stacked state of the active members
    def _assemble(self, members: list[TrialConfig]) -> None:
        """Fresh stacked parameters (the shared initial model), optimizers, multipliers
        and methods for ``members``; ``_load_members`` then fills in trained state."""
        self.members = members
        k = len(members)
        self.epsilons = [constraint_epsilon(c, self.kind) for c in members]
        self.params = {
            name: value.unsqueeze(0).repeat(k, *([1] * value.ndim)).requires_grad_(k > 0)
            for name, value in self._initial.items()
        }
        if not members:
            return
        size = self.kind.num_constraints()
        shared = members[0]
        self.method = stack_methods(
            [build_method(c, self.kind, n_train=len(self.data.train.y)) for c in members],
            dtype=self.dtype,
            device=self.device,
        )
        self.multipliers = Multipliers(
            size,
            equality=self.kind.equality,
            init=shared.dual.init,
            device=self.device,
            dtype=self.dtype,
            members=k,
        )
        self.dual_optimizer = stack_dual_optimizers(
            [build_dual_optimizer(c, size, self.device, self.dtype) for c in members],
            dtype=self.dtype,
            device=self.device,
        )
        lrs = torch.tensor([float(c.value("lr")) for c in members], dtype=self.dtype)
        self.primal_optimizer = stacked_optimizer(
            shared.train.optimizer, list(self.params.values()), lrs.to(self.device)
        )
        self.step = PrimalDualStep(
            self.method,
            self.primal_optimizer,
            self.multipliers,
            self.dual_optimizer,
            shared.dual.scheme,
            restart=shared.dual.restart,
        )

    @property
    def active(self) -> list[str]:
        """The trial ids still training, in pack order."""
        return [c.trial_id for c in self.members]

    # -- training
    def _observe(self, batch: Batch) -> Observation:
        prefixed = {f"model.{n}": p for n, p in self.params.items()}

        def member(params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            out: tuple[Tensor, Tensor, Tensor, Tensor] = functional_call(
                self._observer, params, (batch,)
            )
            return out

        objective, erm_loss, values, hard = vmap(member, randomness="error")(prefixed)
        dual = hard if self._observer.proxy[0] else None
        return Observation(
            objective, erm_loss, ConstraintBatch(values, self._observer.index[0], dual)
        )

    def train_epoch(self) -> list[str]:
        """One pass over the training data for every active member; returns the members
        taken out because their loss became non-finite."""
        if not self.members:
            return []
        self.model.train()
        started = time.perf_counter()
        total: Tensor | None = None
        for batch in draw_batches(self.task, self.data.train, self.batch_size, self.generator):
            out = self.step(functools.partial(self._observe, batch))
            total = out.loss if total is None else total + out.loss
        self.epoch += 1
        self._train_seconds += time.perf_counter() - started
        self._epochs_timed += 1
        if total is None:
            return []
        finite = torch.isfinite(total).tolist()
        return self._drop([i for i, ok in enumerate(finite) if not ok], "non-finite training loss")

    def stop(self, trial_ids: Collection[str]) -> None:
        """Take the members ``trial_ids`` out of the pack as stopped early (their results
        were taken before); the others go on exactly as they would have."""
        positions = [i for i, c in enumerate(self.members) if c.trial_id in set(trial_ids)]
        self.stopped.update(self.members[i].trial_id for i in positions)
        self._remove(positions)

    def _drop(self, positions: list[int], detail: str) -> list[str]:
        """Take the members at ``positions`` out of the pack as diverged; the others keep
        their state exactly (re-stacked from their member states)."""
        if not positions:
            return []
        dropped = [self.members[i].trial_id for i in positions]
        for trial_id in dropped:
            self.diverged[trial_id] = Diverged(self.epoch, detail)
        self._remove(positions)
        return dropped

    def _remove(self, positions: list[int]) -> None:
        if not positions:
            return
        keep = [i for i in range(len(self.members)) if i not in set(positions)]
        states = [self.member_state_dict(i) for i in keep]
        self._assemble([self.members[i] for i in keep])
        if states:
            self._load_members(states)

    # -- evaluation
    def _load_member_into_model(self, position: int) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(self.params[name][position])

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Each active member's ARCHITECTURE §3.4 metrics (as an unpacked trial reports
        them); members with a non-finite training loss are taken out as diverged. The
        timing metrics are the pack's: every member trained in the same epoch time."""
        out: dict[str, dict[str, float]] = {}
        bad: list[int] = []
        timing = epoch_timing(
            self._train_seconds, self._epochs_timed, self.data.train.n, epoch=self.epoch
        )
        self._train_seconds, self._epochs_timed = 0.0, 0
        for position, config in enumerate(self.members):
            self._load_member_into_model(position)
            ev = evaluate_trial(
                self.task,
                self.model,
                self.kind,
                self.data,
                self.multipliers.value[position],
                epsilon=self.epsilons[position],
            )
            if not np.isfinite(ev.metrics["train/loss_mean"]):
                bad.append(position)
                continue
            self._last_eval[config.trial_id] = ev.splits
            out[config.trial_id] = {**ev.metrics, **timing, "epoch": float(self.epoch)}
        self._drop(bad, "non-finite training loss at evaluation")
        return out

    def per_sample(self, trial_id: str) -> dict[str, np.ndarray]:
        """A member's per-sample arrays from its last evaluation (``TrialResult.per_sample``)."""
        position = self.active.index(trial_id)
        if trial_id not in self._last_eval:
            self.evaluate()
            position = self.active.index(trial_id)
        return per_sample_arrays(
            self.data,
            self._last_eval[trial_id],
            self.multipliers.value[position] if self.per_sample_kind else None,
        )

    def multipliers_of(self, trial_id: str) -> np.ndarray:
        return self.multipliers.value[self.active.index(trial_id)].detach().cpu().numpy()

    # -- state
    def member_state_dict(self, position: int) -> dict[str, Any]:
        """The active member at ``position`` as the ``Trainer.state_dict`` of its trial."""
        config = self.members[position]
        return {
            "version": STATE_VERSION,
            "trial_id": config.trial_id,
            "epoch": self.epoch,
            "model": {n: p[position].detach().clone() for n, p in self.params.items()},
            "primal_optimizer": self.primal_optimizer.member_state_dict(position),
            "multipliers": self.multipliers.member_state_dict(position),
            "dual_optimizer": self.dual_optimizer.member_state_dict(position),
            "method": self.method.member_state_dict(position),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": [dict(h) for h in self.histories[config.trial_id]],
        }

    def _load_members(self, states: list[dict[str, Any]]) -> None:
        """Load the active members' single-trial states (in member order)."""
        for config, state in zip(self.members, states, strict=True):
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"unsupported trainer state version {state.get('version')!r}")
            if state.get("trial_id") != config.trial_id:
                raise ValueError(
                    f"state is for trial {state.get('trial_id')!r}, not {config.trial_id!r}"
                )
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"a pack's members must be at the same epoch, got {sorted(epochs)}")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.stack([s["model"][name] for s in states]))
        self.primal_optimizer.load_member_state_dicts([s["primal_optimizer"] for s in states])
        self.multipliers.load_member_state_dicts([s["multipliers"] for s in states])
        self.dual_optimizer.load_member_state_dicts([s["dual_optimizer"] for s in states])
        self.method.load_member_state_dicts([s["method"] for s in states])
        self.generator.set_state(states[0]["generator"])
        torch.set_rng_state(states[0]["torch_rng"])
        self.epoch = epochs.pop()
        for config, state in zip(self.members, states, strict=True):
            self.histories[config.trial_id] = [dict(h) for h in state["history"]]

    def state_dict(self) -> dict[str, Any]:
        """The pack's state: each active member's trial state, and the diverged ones."""
        return {
            "version": PACK_STATE_VERSION,
            "members": {c.trial_id: self.member_state_dict(i) for i, c in enumerate(self.members)},
            "diverged": {t: (e.epoch, e.detail) for t, e in self.diverged.items()},
            "stopped": sorted(self.stopped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != PACK_STATE_VERSION:
            raise ValueError(f"unsupported pack state version {state.get('version')!r}")
        self.diverged = {t: Diverged(int(e), str(d)) for t, (e, d) in state["diverged"].items()}
        self.stopped = set(state.get("stopped", ()))
        members = state["members"]
        held = set(members) | set(self.diverged) | self.stopped
        ours = {c.trial_id for c in self.members}
        if held != ours:
            raise ValueError(
                f"pack state is for trials {sorted(held)}, this pack trains {sorted(ours)}"
            )
        active = [c for c in self.members if c.trial_id in members]
        self._assemble(active)
        if active:
            self._load_members([members[c.trial_id] for c in active])
