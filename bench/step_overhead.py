"""P1 and P2: the cost of a constrained step.

P1: step time of ``fl``, ``rfl`` and ``alm`` ÷ ``erm`` on the same model and batches (the
    per-sample multipliers of Feasible Learning: one per training sample). Target ≤ 1.05.
P2: dualtune's FL step ÷ Cooper's FL step (IndexedMultiplier + AlternatingDualPrimalOptimizer,
    SGD dual) on the same problem. Target ≤ 0.8.

Timing: each configuration runs ``--steps`` steps after a warm-up; the configurations are
interleaved over ``--repeats`` rounds and the median per-step time is kept, so that drift
on a shared machine hits them all alike. Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cooper
import torch
from torch import nn
from torch.nn import functional as F

from core.engine.dual_optimizers import GradientAscent
from core.engine.methods import ALM, ERM, FL, RFL, Method
from core.engine.multipliers import Multipliers
from core.engine.observation import ConstraintBatch, Observation
from core.engine.step import PrimalDualStep


@dataclass(frozen=True)
class Problem:
    name: str
    n: int
    features: int
    hidden: tuple[int, ...]
    classes: int
    batch: int


PROBLEMS = (
    Problem("digits-size MLP (n=1,797, 64→64→10, batch 128)", 1797, 64, (64,), 10, 128),
    Problem(
        "Fashion-MNIST-size MLP (n=60,000, 784→256→256→10, batch 256)",
        60_000,
        784,
        (256, 256),
        10,
        256,
    ),
)


def mlp(p: Problem) -> nn.Module:
    layers: list[nn.Module] = []
    width = p.features
    for h in p.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, p.classes))
    return nn.Sequential(*layers)


class Setup:
    def __init__(self, p: Problem, device: torch.device) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(p.n, p.features, generator=g).to(device)
        self.y = torch.randint(0, p.classes, (p.n,), generator=g).to(device)
        self.order = torch.randperm(p.n, generator=g).to(device)
        self.p, self.device = p, device
        torch.manual_seed(0)
        self.model = mlp(p).to(device)

    def batch(self, step: int) -> torch.Tensor:
        start = (step * self.p.batch) % (self.p.n - self.p.batch)
        return self.order[start : start + self.p.batch]


def ours(setup: Setup, method: Method) -> Callable[[int], None]:
    model = setup.model
    lam = Multipliers(setup.p.n, device=setup.device)
    step = PrimalDualStep(
        method, torch.optim.SGD(model.parameters(), lr=0.01), lam, GradientAscent(0.01)
    )

    def run(i: int) -> None:
        idx = setup.batch(i)

        def observe() -> Observation:
            losses = F.cross_entropy(model(setup.x[idx]), setup.y[idx], reduction="none")
            objective = losses.mean() if method.name == "erm" else losses.new_zeros(())
            return Observation(objective, losses.mean(), ConstraintBatch(losses, idx))

        step(observe)

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


def theirs(setup: Setup) -> Callable[[int], None]:
    model = setup.model
    cmp = _FL(setup.p.n, setup.device)
    optimizer = cooper.optim.AlternatingDualPrimalOptimizer(
        cmp=cmp,
        primal_optimizers=torch.optim.SGD(model.parameters(), lr=0.01),
        dual_optimizers=torch.optim.SGD(
            cmp.dual_parameters(), lr=0.01, maximize=True, foreach=False
        ),
    )

    def run(i: int) -> None:
        idx = setup.batch(i)
        optimizer.roll({"model": model, "x": setup.x[idx], "y": setup.y[idx], "idx": idx})

    return run


def measure(
    runs: dict[str, Callable[[int], None]], steps: int, repeats: int, device: torch.device
) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in runs}
    for run in runs.values():
        for i in range(20):
            run(i)
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(steps):
                run(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out: dict[str, object] = {"device": str(device), "threads": args.threads, "problems": []}
    for p in PROBLEMS:
        methods: dict[str, Method] = {
            "erm": ERM(),
            "fl": FL(epsilon=0.5),
            "rfl": RFL(alpha=1.0, epsilon=0.5),
            "alm": ALM(rho=1.0, epsilon=0.5),
        }
        runs = {name: ours(Setup(p, device), m) for name, m in methods.items()}
        runs["cooper_fl"] = theirs(Setup(p, device))
        t = measure(runs, args.steps, args.repeats, device)
        row = {
            "problem": p.name,
            "step_ms": {k: v * 1e3 for k, v in t.items()},
            "P1": {k: t[k] / t["erm"] for k in ("fl", "rfl", "alm")},
            "P2": t["fl"] / t["cooper_fl"],
        }
        out["problems"].append(row)  # type: ignore[attr-defined]
        print(json.dumps(row, indent=1))
    return out


if __name__ == "__main__":
    main()
