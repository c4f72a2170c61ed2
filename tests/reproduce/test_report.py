"""The reproduction report: every section's specs exist, and its verdicts follow the numbers."""

from pathlib import Path
from typing import Any

from dualtune.core.spec import load_spec
from reproduce.experiments import SECTIONS
from reproduce.report import verdict_convection, verdict_feasible_learning, write_report
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


def test_the_feasible_learning_verdict_reads_the_numbers() -> None:
    erm = trial("erm", {}, train__cvar_0p1=1.0, train__loss_max=5.0, train__loss_mean=0.20)
    better = trial(
        "fl",
        {"epsilon": 0.105, "dual_lr": 0.001},
        train__cvar_0p1=0.8,
        train__loss_max=3.0,
        train__loss_mean=0.205,
    )
    worse_mean = trial(
        "rfl",
        {"epsilon": 0.105, "dual_lr": 0.001, "alpha": 1.0},
        train__cvar_0p1=0.8,
        train__loss_max=3.0,
        train__loss_mean=0.3,
    )
    lines = verdict_feasible_learning([record("fl_fashion_mnist", [erm, better, worse_mean])])
    assert len(lines) == 2
    assert "fl (" in lines[0]
    assert "**holds**" in lines[0]
    assert "rfl (" in lines[1]
    assert "**does not hold**" in lines[1]


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
