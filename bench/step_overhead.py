"""P1 and P2: the cost of a constrained step, with packing off and on.

P1: step time of ``fl``, ``rfl`` and ``alm`` ÷ ``erm`` on the same model and batches (the
    per-sample multipliers of Feasible Learning: one per training sample). Targets: ≤ 1.10
    on the digits MLP, ≤ 1.05 on the Fashion-MNIST MLP (``Problem.p1_target``).
P2: dualtune's FL step ÷ Cooper's FL step (IndexedMultiplier + AlternatingDualPrimalOptimizer,
    SGD dual) on the same problem. Target ≤ 0.8.

Packing off is the step an unpacked trial runs (``Trainer.step`` on ``Trainer._observe``);
packing on is a pack of ``--pack-size`` members (``PackTrainer``, members differing in lr),
whose step time is divided by the members: the step time per trial. A unit of one (what
``fit_unit`` trains for one trial, ``unit_trainer``) must be the unpacked trainer: the bench
checks that it is and times its step as a row of its own (``unit_of_one_over_unpacked`` ≈ 1).
``--unpacked-only`` skips the packs (the P1 rows alone, quickly). Both run on the real
tasks (sklearn digits; Fashion-MNIST) with pre-drawn batches, as does Cooper (its own copy
of the same model, same batches).

Timing: each configuration runs ``--steps`` steps (a pack ``--steps`` ÷ 4: each of its
steps does K members' work) after a warm-up; the configurations are interleaved over
``--repeats`` rounds and the median per-step time is kept, so that drift on a shared
machine hits them all alike. Ratios are taken within one run. ``--clock thread`` times the
CPU time of the (single) training thread instead of wall time: on a machine shared with
other work the ratios then stop depending on how often the process was descheduled.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cooper
import torch
from torch import nn
from torch.nn import functional as F

from dualtune.core.engine.constraints import Batch
from dualtune.core.engine.pack_trainer import PackTrainer
from dualtune.core.engine.trainer import Trainer, draw_batches
from dualtune.core.engine.unit import SingleTrainer, unit_trainer
from dualtune.core.spec import TrialConfig, load_spec

METHODS = ("erm", "fl", "rfl", "alm")
BATCHES = 32
"""Pre-drawn full batches each configuration cycles through."""


@dataclass(frozen=True)
class Problem:
    name: str
    task: dict[str, Any]
    batch: int
    p1_target: float
    """P1's target for an unpacked trial (issue 15): the smaller the step, the larger the
    share of the constrained step's fixed cost."""


PROBLEMS = (
    Problem(
        "digits MLP (n=1,437, 64→64→10, batch 128)",
        {"name": "digits", "params": {"hidden": [64]}},
        128,
        1.10,
    ),
    Problem(
        "Fashion-MNIST MLP (n=60,000, 784→256→256→10, batch 256)",
        {"name": "fashion_mnist", "params": {"hidden": [256, 256]}},
        256,
        1.05,
    ),
)


def configs(p: Problem, method: str, k: int) -> list[TrialConfig]:
    """``k`` trials of ``method`` that differ only in lr (ERM reads no ε or dual lr)."""
    spec = load_spec(
        {
            "name": "bench-p1",
            "task": p.task,
            "constraint": {"kind": "sample_loss"},
            "methods": [method],
            "grid": {
                "lr": [round(0.01 * (1 + 0.01 * i), 6) for i in range(k)],
                "epsilon": 0.5,
                "alpha": 1.0,
                "rho": 0.01,  # ρ = 1 on a summed batch of 256 diverged within 200 steps
                "dual_lr": 0.01,
                "seed": 0,
            },
            "train": {"batch_size": p.batch, "optimizer": {"name": "sgd", "lr": 0.01}},
        }
    )
    return spec.trials()


def batches(trainer: Trainer | PackTrainer, size: int) -> list[Batch]:
    drawn: list[Batch] = []
    while len(drawn) < BATCHES:
        for b in draw_batches(trainer.task, trainer.data.train, size, trainer.generator):
            if b.x.shape[0] == size:
                drawn.append(b)
    return drawn[:BATCHES]


def engine(trainer: Trainer | PackTrainer, drawn: list[Batch]) -> Callable[[int], None]:
    """The engine's step as the trainer runs it, on pre-drawn batches."""

    def run(i: int) -> None:
        trainer.step(functools.partial(trainer._observe, drawn[i % len(drawn)]))

    return run


class _FL(cooper.ConstrainedMinimizationProblem):
    def __init__(self, n: int, device: torch.device) -> None:
        super().__init__()
        self.c = cooper.Constraint(
            constraint_type=cooper.ConstraintType.INEQUALITY,
            multiplier=cooper.multipliers.IndexedMultiplier(num_constraints=n, device=device),
        )

    def compute_cmp_state(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> cooper.CMPState:
        losses = F.cross_entropy(model(x), y, reduction="none")
        return cooper.CMPState(
            loss=None,
            observed_constraints={
                self.c: cooper.ConstraintState(violation=losses, constraint_features=idx)
            },
        )


def theirs(trainer: Trainer, drawn: list[Batch]) -> Callable[[int], None]:
    """Cooper's FL step on its own copy of the trial's model, same batches."""
    torch.manual_seed(0)
    model = trainer.task.make_model(trainer.data).to(trainer.device)
    cmp = _FL(trainer.data.train.n, trainer.device)
    optimizer = cooper.optim.AlternatingDualPrimalOptimizer(
        cmp=cmp,
        primal_optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        dual_optimizers=torch.optim.SGD(
            cmp.dual_parameters(), lr=0.01, maximize=True, foreach=False
        ),
    )

    def run(i: int) -> None:
        b = drawn[i % len(drawn)]
        optimizer.roll({"model": model, "x": b.x, "y": b.y, "idx": b.index})

    return run


def unit_of_one(trial: TrialConfig) -> Trainer:
    """The trainer ``fit_unit`` trains a unit of one trial with; it must be the unpacked
    ``Trainer`` (a pack of one pays the vmapped step's fixed cost)."""
    unit = unit_trainer([trial])
    if not isinstance(unit, SingleTrainer) or type(unit.trainer) is not Trainer:
        raise AssertionError(f"a unit of one trains with {type(unit).__name__}, not Trainer")
    return unit.trainer


CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread": time.thread_time,
}


def measure(
    runs: dict[str, tuple[Callable[[int], None], int]],
    repeats: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per step of each ``(run, steps)``."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run, _ in runs.values():
        for i in range(10):
            run(i)
    for _ in range(repeats):
        for name, (run, steps) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            for i in range(steps):
                run(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((clock() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pack-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--problems", default=",".join(str(i) for i in range(len(PROBLEMS))))
    parser.add_argument(
        "--unpacked-only", action="store_true", help="skip the packs: the P1/P2 rows alone"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the training thread's CPU time (CPU and 1 thread only)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "thread" and (device.type != "cpu" or args.threads != 1):
        parser.error("--clock thread times one CPU thread: use it with --device cpu --threads 1")
    k = args.pack_size
    packed = not args.unpacked_only
    out: dict[str, Any] = {
        "device": str(device),
        "threads": args.threads,
        "steps": args.steps,
        "repeats": args.repeats,
        "pack_size": k if packed else None,
        "clock": args.clock,
        "problems": [],
    }
    for p in (PROBLEMS[int(i)] for i in args.problems.split(",")):
        runs: dict[str, tuple[Callable[[int], None], int]] = {}
        drawn: list[Batch] = []
        for method in METHODS:
            trials = [
                c.model_copy(update={"train": c.train.model_copy(update={"device": str(device)})})
                for c in configs(p, method, k)
            ]
            trainer = Trainer(trials[0])
            drawn = drawn or batches(trainer, p.batch)
            runs[method] = (engine(trainer, drawn), args.steps)
            runs[f"unit_{method}"] = (engine(unit_of_one(trials[0]), drawn), args.steps)
            if packed:
                pack = PackTrainer(trials)
                runs[f"pack_{method}"] = (engine(pack, drawn), max(1, args.steps // 4))
            if method == "fl":
                runs["cooper_fl"] = (theirs(trainer, drawn), args.steps)
        t = measure(runs, args.repeats, device, CLOCKS[args.clock])
        row: dict[str, Any] = {
            "problem": p.name,
            "p1_target": p.p1_target,
            "step_ms": {m: t[m] * 1e3 for m in (*METHODS, "cooper_fl")},
            "unit_of_one_step_ms": {m: t[f"unit_{m}"] * 1e3 for m in METHODS},
            "P1": {m: t[m] / t["erm"] for m in ("fl", "rfl", "alm")},
            "P2": t["fl"] / t["cooper_fl"],
            "unit_of_one_over_unpacked": {m: t[f"unit_{m}"] / t[m] for m in METHODS},
        }
        if packed:
            per_member = {m: t[f"pack_{m}"] / k for m in METHODS}
            row.update(
                {
                    "pack_step_ms": {m: t[f"pack_{m}"] * 1e3 for m in METHODS},
                    "member_step_ms": {m: v * 1e3 for m, v in per_member.items()},
                    "P1_packed": {
                        m: per_member[m] / per_member["erm"] for m in ("fl", "rfl", "alm")
                    },
                    "P2_packed": per_member["fl"] / t["cooper_fl"],
                    "packed_over_unpacked": {m: per_member[m] / t[m] for m in METHODS},
                }
            )
        out["problems"].append(row)
        print(json.dumps(row, indent=1), flush=True)
    return out


if __name__ == "__main__":
    main()
