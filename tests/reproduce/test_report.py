"""The reproduction report: every section's specs exist, and its verdicts follow the numbers."""

from pathlib import Path
from typing import Any

import pytest

from dualtune.core.spec import load_spec
from reproduce.experiments import SECTIONS
from reproduce.report import (
    figure_loss_cdf,
    loss_tails,
    verdict_convection,
    verdict_feasible_learning,
    verdict_rfl_alpha,
    write_report,
)
from reproduce.runner import spec_path


def test_every_section_spec_exists_and_every_reproduce_spec_is_in_a_section() -> None:
    named = {name for section in SECTIONS for name in section.specs}
    for name in named:
        assert load_spec(spec_path(name)).count_trials() >= 1
    assert {p.stem for p in Path("examples/reproduce").glob("*.yaml")} == named


def record(name: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    spec = load_spec(spec_path(name)).model_dump(mode="json")
    return {"name": name, "spec": spec, "sweep_id": "s", "wall_s": 60.0, "trials": trials}


def trial(method: str, params: dict[str, float], **metrics: float) -> dict[str, Any]:
    return {
        "trial_id": f"{method}-{sorted(params.items())}",
        "method": method,
        "params": {"seed": 0, **params},
        "status": "succeeded",
        "metrics": {k.replace("__", "/").replace("0p", "0."): v for k, v in metrics.items()},
    }


def held_out(cvar: float, top: float, **more: float) -> dict[str, float]:
    """Val metrics with the tail scaled from one number (CVaR₀.₀₁ > CVaR₀.₀₅ > CVaR₀.₁)."""
    return {
        "val__cvar_0p01": 3 * cvar,
        "val__cvar_0p05": 1.6 * cvar,
        "val__cvar_0p1": cvar,
        "val__loss_max": top,
        **more,
    }


def fashion_trials() -> list[dict[str, Any]]:
    """ERM fits the training set best; FL has the lower held-out tail within the accuracy
    margin; RFL the lower train tail but the higher held-out one; CSERM the lower held-out
    tail at 1.5 points of accuracy."""
    train_erm = {"train__cvar_0p1": 0.58, "train__loss_max": 7.6, "train__loss_mean": 0.06}
    erm = trial("erm", {}, **train_erm, **held_out(5.0, 50.0, val__accuracy=0.890))
    fl = trial(
        "fl",
        {"epsilon": 0.105, "dual_lr": 0.001},
        train__cvar_0p1=0.8,
        train__loss_max=8.0,
        train__loss_mean=0.1,
        **held_out(4.0, 45.0, val__accuracy=0.885),
    )
    rfl = trial(
        "rfl",
        {"epsilon": 0.105, "dual_lr": 0.001, "alpha": 1.0},
        train__cvar_0p1=0.3,
        train__loss_max=3.0,
        train__loss_mean=0.061,
        **held_out(6.0, 55.0, val__accuracy=0.895),
    )
    cserm = trial(
        "cserm",
        {"epsilon": 0.105},
        **train_erm,
        **held_out(3.0, 30.0, val__accuracy=0.875),
    )
    return [erm, fl, rfl, cserm]


def test_the_feasible_learning_claim_is_judged_on_the_held_out_split() -> None:
    lines = verdict_feasible_learning([record("fl_fashion_mnist", fashion_trials())])
    fl, rfl, cserm, every = lines
    # FL's train tail is worse than ERM's and its val tail better: the claim holds.
    assert fl.startswith("* `fl_fashion_mnist` fl (")
    assert "**holds**" in fl
    assert "held out (val): CVaR₀.₀₁ 12.00 vs 15.00 (-20.0 %)" in fl
    assert "CVaR₀.₁ 4.0000 vs 5.0000 (-20.0 %)" in fl
    assert "accuracy -0.50 points" in fl
    # RFL's train tail is better than ERM's and its val tail worse: it does not.
    assert "**does not hold**" in rfl
    assert "val CVaR₀.₀₁ not below ERM's" in rfl
    assert "val max loss not below ERM's" in rfl
    # A lower val tail is not enough: accuracy must stay within the margin.
    assert "**does not hold**: val accuracy 1.50 points below ERM's (margin 1)" in cserm
    assert "1 of 2 meet the held-out claim — fl (epsilon=0.105, dual_lr=0.001)." in every


def test_the_feasible_learning_claim_for_regression_bounds_the_val_mean_loss() -> None:
    erm = trial("erm", {}, **held_out(6.0, 1000.0, val__loss_mean=1.00))
    close = trial(
        "fl", {"epsilon": 0.5, "dual_lr": 0.01}, **held_out(5.0, 900.0, val__loss_mean=1.04)
    )
    far = trial(
        "rfl",
        {"epsilon": 0.5, "dual_lr": 0.01, "alpha": 0.1},
        **held_out(5.0, 900.0, val__loss_mean=1.10),
    )
    fl, rfl, _ = verdict_feasible_learning([record("fl_cps_wages", [erm, close, far])])
    assert "**holds**" in fl
    assert "mean loss 1.0400 vs 1.0000 (+4.0 %)" in fl
    assert "**does not hold**: val mean loss +10.0 % against ERM's (margin +5 %)" in rfl


def test_the_loss_tail_figure_reads_each_split_s_own_losses(tmp_path: Path) -> None:
    levels = [0.0, 0.5, 0.9, 1.0]
    t = trial("erm", {}, train__cvar_0p1=1.0)
    t |= {"train_loss_quantiles": [0.1, 0.2, 0.3, 0.4], "val_loss_quantiles": [1.0, 2.0, 3.0, 4.0]}
    t["loss_levels"] = levels
    rec = record("fl_fashion_mnist", [t])
    ((label, xs, ys),) = loss_tails(rec, "val")
    assert label == "erm (–)"
    assert xs == [1.0, 2.0, 3.0]
    assert ys == [1.0, 0.5, pytest.approx(0.1)]
    assert loss_tails(rec, "train")[0][1] == [0.1, 0.2, 0.3]
    assert figure_loss_cdf(rec, tmp_path / "tail.png")
    del t["val_loss_quantiles"]
    assert loss_tails(rec, "val") == []


def test_the_rfl_alpha_verdict_reads_the_held_out_tail() -> None:
    erm = trial("erm", {}, val__cvar_0p1=5.0, val__loss_max=50.0, train__cvar_0p1=0.5)
    rfl = [
        trial(
            "rfl",
            {"epsilon": 0.105, "dual_lr": 0.01, "alpha": a},
            val__cvar_0p1=v,
            val__loss_max=40.0,
            train__cvar_0p1=t,
            dual__lambda_mean=1.0,
        )
        for a, v, t in ((0.1, 4.0, 0.9), (1.0, 6.0, 0.4))
    ]
    lines = verdict_rfl_alpha([record("rfl_alpha", [erm, *rfl])])
    assert "val/cvar_0.1 (the held-out tail): +1.00" in lines[1]
    assert "train/cvar_0.1 (the train tail, not the claim): -1.00" in lines[2]
    assert "val CVaR₀.₁ below ERM's (5.0000) at 1 of 2 values of α (α = 0.1)." in lines[3]


def test_the_convection_verdict_pairs_seeds_across_specs() -> None:
    def run(method: str, seed: int, error: float) -> dict[str, Any]:
        t = trial(method, {}, val__rel_l2=error)
        t["params"]["seed"] = seed
        return t

    constrained = record("convection", [run("fl", 0, 0.03), run("fl", 1, 0.7)])
    penalty = record("convection_penalty", [run("penalty", 0, 0.6), run("penalty", 1, 0.6)])
    (line,) = verdict_convection([constrained, penalty])
    assert "lower in 1 of 2 seeds" in line
    assert "**does not hold**" in line


def test_the_report_is_written_with_a_section_per_claim(tmp_path: Path) -> None:
    erm = trial("erm", {}, train__cvar_0p1=1.0, train__loss_max=5.0, train__loss_mean=0.2)
    doc = tmp_path / "results.md"
    write_report({"fl_fashion_mnist": record("fl_fashion_mnist", [erm])}, doc, ["# Results", ""])
    text = doc.read_text()
    assert text.count("\n## ") == len(SECTIONS)
    assert "| erm | – | succeeded |" in text
    assert "Not run yet: fl_cps_wages." in text
