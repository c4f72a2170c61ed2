"""Tiny versions of every benchmark, so that ``make bench`` does not rot between runs."""

import importlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench import (
    fairness,
    figures,
    packing,
    per_sample_logging,
    process_timers,
    run_all,
    step_overhead,
    sweep_overhead,
    timers,
)

TINY_SWEEP = {
    "name": "bench-tiny",
    "task": {"name": "two_moons", "params": {"n_train": 128, "n_val": 64}},
    "constraint": {"kind": "sample_loss"},
    "methods": ["fl"],
    "grid": {"epsilon": [0.1, 0.2], "seed": 0},
    "train": {"epochs": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def small_results() -> dict[str, Any]:
    return {
        "p1p2": step_overhead.main(
            ["--steps", "4", "--repeats", "1", "--problems", "0", "--pack-size", "2"]
        ),
        "scaling_k": packing.scaling_k(ks=(1, 2), epochs=1),
        "scaling_n": packing.scaling_n(ns=(1000, 2000), k=2),
        "memory": packing.memory({"digits": (packing.DIGITS, (1, 2))}),
        "p5": per_sample_logging.main(["--n", "2000", "--k", "2", "--repeats", "1"]),
    }


def test_small_runs_report_what_render_reads(small_results: dict[str, Any]) -> None:
    row = small_results["p1p2"]["problems"][0]
    assert set(row["member_step_ms"]) == set(step_overhead.METHODS)
    assert all(r["members_left"] == r["k"] for r in small_results["scaling_k"]["rows"])
    mem = small_results["memory"]["problems"][0]
    assert mem["member_bytes_estimate"] > 0
    assert mem["tensor_bytes_per_member"] > 0
    assert small_results["p5"]["log_per_sample_s"] > 0


def _fake_p3() -> dict[str, Any]:
    breakdown = packing._breakdown(
        [
            timers.Call("driver: Tuner.fit", 100.0, 110.0, 10.0, 1),
            timers.Call("driver: MLflow experiment", 99.0, 99.5, 0.5, 1),
        ],
        {
            7: [
                timers.Call("process: start → setup hook", 100.5, 101.0, 0.0, 7),
                timers.Call("import: worker.pack_trainable", 101.0, 103.0, 1.0, 7),
                timers.Call("trial: run_unit (rest)", 104.0, 109.0, 0.5, 7),
                timers.Call("train: epochs", 104.5, 105.5, 1.0, 7),
                timers.Call("mlflow: log_final", 106.0, 109.0, 3.0, 7),
            ]
        },
        wall_s=11.0,
    )
    assert breakdown["timeline"]["the trial itself (run_unit)"] == pytest.approx(5.0)
    assert sum(breakdown["timeline"].values()) == pytest.approx(breakdown["fit_s"])
    # Tracking's share: the logger's 3 s of the trial's 5 s.
    assert breakdown["tracking_share"] == pytest.approx(0.6)
    return {
        "trials": 27,
        "cpus": 2,
        "ray_init_s": 3.0,
        "one_process_s": 5.0,
        "one_process_packed_s": 1.0,
        "plain_tune": {"wall_s": 100.0},
        "unpacked": {"wall_s": 120.0, "units": 27},
        "packed": {"wall_s": 12.0, "units": 2},
        "packed_over_plain": 0.12,
        "unpacked_over_plain": 1.2,
        "packed_over_one_process_packed": 12.0,
        "target": 0.05,
        "tracking_share": breakdown["tracking_share"],
        "tracking_target": 0.1,
        "timers_missing": ["worker.driver._init_ray (driver: Ray init check)"],
        "breakdown": breakdown,
    }


def _fake_p6() -> dict[str, Any]:
    def run(wall: float, how: str) -> dict[str, Any]:
        return {
            "wall_s": wall,
            "store_setup_s": 0.5,
            "logged": {"runs": 28, "runs_with_metrics": 28},
            "breakdown": {
                "wall_s": wall,
                "timeline": {"driver: run_sweep": wall - 1.0, "CLI: its exit": 1.0},
                "driver_imports": {"torch": 2.0},
                "run_sweep": {"Tuner.fit": wall - 2.0, "Ray: start or join": 1.0},
                "ray_init": [how],
                "joined": how.startswith("join"),
                "tune": {},
            },
        }

    joined = run(30.0, "start a local runtime")
    joined |= {"head_start_s": 4.0, "note": "joining a running runtime is not wired (yet)"}
    return {
        "spec": "bench/p6_grid.yaml",
        "trials": 27,
        "epochs": 20,
        "cpus": 2,
        "target_pack": 2.0,
        "target_loop": 0.5,
        "one_pack_s": 10.0,
        "loop_script_s": 40.0,
        "loop_in_process_s": 30.0,
        "cli": run(50.0, "start a local runtime"),
        "cli_instrumented": run(51.0, "start a local runtime"),
        "cli_joined": joined,
        "P6a": 5.0,
        "P6b": 1.25,
        "P6a_joined": 3.0,
        "P6b_joined": 0.75,
        "cli_over_loop_in_process": 50.0 / 30.0,
    }


def test_render_and_figures(small_results: dict[str, Any], tmp_path: Path) -> None:
    results = {
        **small_results,
        "p3": _fake_p3(),
        "p6": _fake_p6(),
        "meta": {"machine": "m", "started": "s", "finished": "f", "command": "c", "gpu": None},
    }
    text = run_all.render(results, "## P4: kept\n")
    assert "**P3 = dualtune (packed) ÷ plain Tune = 0.120** — **missed**" in text
    assert "**Tracking = 60.0 % of the packed trial's wall time**" in text
    assert "`worker.driver._init_ray (driver: Ray init check)`" in text
    assert "**P6a = (a) ÷ (b) = 5.00** — **missed** (target ≤ 2.0)" in text
    assert "**P6b = (a) ÷ (c) = 1.25** — **missed** (target ≤ 0.5)" in text
    assert "Joining a running Ray runtime: P6a = 3.00" in text
    assert "joining a running runtime is not wired (yet)" in text
    # Once after P3 and once after P1/P2.
    assert text.count(f"* GPU: {run_all.NO_GPU}.") == 2
    assert "## P5" in text
    assert "## Memory per member" in text
    assert "P1 worst" in text
    assert text.endswith("## P4: kept\n")
    figures.draw(results, tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "p3.png",
        "p6.png",
        "p1p2.png",
        "scaling.png",
        "memory.png",
    }


def test_only_names_parts_and_keeps_the_others_from_the_previous_run() -> None:
    parser = run_all.argparse.ArgumentParser()
    assert run_all._parts(parser, "p6,p3,p1") == {"p6", "p3", "p1p2"}
    previous = {
        "p5": {"ratio": 0.01},
        "p3": {"old": True},
        "meta": {"started": "2026-11-26 09:26", "kept": {"p5": "2026-11-20 10:00"}},
    }
    results: dict[str, Any] = {"p3": {"new": True}}
    kept = run_all._keep(results, previous, {"p3", "p6"})
    assert results == {"p3": {"new": True}, "p5": {"ratio": 0.01}}
    # A part kept twice still says the run it was measured in.
    assert kept == {"p5": "2026-11-20 10:00"}


def test_process_start_is_read_to_the_tick() -> None:
    before = time.time()
    child = subprocess.Popen(["sleep", "5"])
    after = time.time()
    try:
        started = process_timers.process_started(child.pid)
    finally:
        child.kill()
        child.wait()
    # One clock tick (10 ms) of slack each side; /proc/stat's btime is whole seconds.
    assert before - 0.02 <= started <= after + 0.02


def test_a_name_the_code_lacks_is_listed_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(timers.ENV, str(tmp_path))
    process_timers.tolerate_missing_targets()

    class Owner:
        def present(self) -> int:
            return 1

    recorder = timers.Recorder()
    undo = recorder.wrap(Owner, "gone", "trial: gone")
    undo()
    recorder.wrap(Owner, "present", "trial: present")
    assert Owner().present() == 1
    assert [c.name for c in recorder.calls] == ["trial: present"]
    assert process_timers.read_missing(tmp_path) == ["Owner.gone (trial: gone)"]


def test_the_timers_name_what_the_unit_path_runs() -> None:
    """The names the benchmarks wrap exist in the code: a rename fails here in seconds,
    not in the final benchmark run as a breakdown of zeros."""
    process_timers.extend_targets()
    module = importlib.import_module(process_timers.UNIT_PATH)
    targets = timers._worker_targets(module)
    names = {name for owner, attribute, name in targets if hasattr(owner, attribute)}
    assert any(n.startswith("trial: run_") for n in names), targets
    assert "train: fit_unit loop" in names
    logger = importlib.import_module("dualtune.worker.tracking.trial_run")
    tracked = [n for o, a, n in timers._worker_targets(logger) if hasattr(o, a)]
    assert any(n.startswith(packing.TRACKING_PREFIX) for n in tracked)
    driver = [name for _, _, name in process_timers.driver_targets()]
    assert {"driver: Tuner.fit", "driver: MLflow parent run"} <= set(driver)
    assert any(n in sweep_overhead.RAY_PIECES for n in driver)


def _call(name: str, start: float, end: float, exclusive: float | None = None) -> timers.Call:
    return timers.Call(name, start, end, end - start if exclusive is None else exclusive, 1)


def test_cli_breakdown_adds_up_to_the_wall_time() -> None:
    cli = [_call("process: start → site", 100.1, 100.2), _call("process: exit", 140.0, 140.0)]
    driver = [
        _call("process: start → site", 102.0, 102.3),
        _call("import: torch", 103.0, 105.0),
        _call("driver: run_sweep", 108.0, 138.0, 1.0),
        _call("ray.init: join 127.0.0.1:6379", 108.5, 109.5),
        _call("driver: Ray connect", 108.4, 109.6, 0.2),
        _call("driver: Tuner.fit", 110.0, 137.0),
        _call("process: exit", 139.0, 139.0),
    ]
    b = sweep_overhead.cli_breakdown(cli, driver, {}, launched=100.0, ended=140.5)
    assert sum(b["timeline"].values()) == pytest.approx(40.5)
    assert b["timeline"]["driver: run_sweep"] == pytest.approx(30.0)
    assert b["run_sweep"]["Ray: start or join"] == pytest.approx(1.2)
    assert b["run_sweep"]["run_sweep, untimed"] == pytest.approx(1.0)
    assert b["driver_imports"] == {"torch": 2.0}
    assert b["joined"] is True


def test_cli_breakdown_of_a_cli_that_execs_into_the_driver_adds_up_to_the_wall_time() -> None:
    # The CLI's exit is the driver's start (one pid); Ray starts on a thread of the driver's
    # own before run_sweep, which waits for it.
    cli = [_call("process: start → site", 100.1, 100.2), _call("process: exit", 101.0, 101.0)]
    driver = [
        _call("process: start → site", 101.0, 101.1),
        _call("ray.init: start a local runtime", 101.5, 105.5),
        _call("import: torch", 101.6, 103.6),
        _call("driver: run_sweep", 104.0, 120.0, 1.0),
        _call("driver: Ray connect", 104.5, 106.0, 1.5),
        _call("process: exit", 121.0, 121.0),
    ]
    b = sweep_overhead.cli_breakdown(cli, driver, {}, launched=100.0, ended=121.2)
    assert sum(b["timeline"].values()) == pytest.approx(21.2)
    assert b["timeline"]["CLI: its imports, the spec check, exec into the driver"] == (
        pytest.approx(0.8)
    )
    assert b["timeline"]["driver: its exit (its own Ray runtime killed)"] == pytest.approx(0.2)
    assert b["run_sweep"]["Ray: start or join"] == pytest.approx(1.5)
    assert b["joined"] is False


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_a_timed_dualtune_run_breaks_down(tmp_path: Path) -> None:
    """P6's instrumented ``dualtune run`` (the workers timed as in P3's breakdown)."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps({**TINY_SWEEP, "pack": 2}))
    run = sweep_overhead.cli_run(spec, tmp_path / "run", instrumented=True)
    assert run["logged"]["runs_with_metrics"] >= 2
    b = run["breakdown"]
    assert sum(b["timeline"].values()) == pytest.approx(b["wall_s"], abs=0.05)
    assert b["ray_init"] == ["start a local runtime"]
    tune = b["tune"]
    assert len(tune["units"]) == 1
    assert tune["all_units_pieces"]["train: epochs"] > 0
    assert tune["critical_categories"]["MLflow logging and plots (their imports apart)"] > 0
    assert 0 < tune["tracking_share"] < 1


def test_fairness_quick_run_renders_and_draws(tmp_path: Path) -> None:
    results = fairness.main(["--quick"])
    assert {p["dataset"] for p in results["problems"]} == {"compas"}
    for problem in results["problems"]:
        assert len(problem["eg"]) == len(results["bounds"])
        assert all("val_acc" in r for r in problem["dualtune"])
    text = "\n".join(fairness.render(results))
    assert "## Fairness: dualtune against Fairlearn" in text
    assert "dualtune's best feasible val accuracy ≥ EG's at each bound" in text
    fairness.draw({"fairness": results}, tmp_path)
    assert (tmp_path / "fairness.png").exists()


def test_fairness_best_feasible_is_the_most_accurate_within_the_bound() -> None:
    rows = [
        {"val_acc": 0.9, "val_gap": 0.03},
        {"val_acc": 0.8, "val_gap": 0.01},
        {"val_acc": 0.7, "val_gap": 0.0},
        {"error": "diverged"},
    ]
    assert fairness.best_feasible(rows, 0.02) == rows[1]
    assert fairness.best_feasible(rows, 0.05) == rows[0]
    assert fairness.best_feasible(rows[:2], 0.005) is None


def test_fairness_temperature_table_pairs_the_trials_of_one_epsilon() -> None:
    def row(eps: float, acc: float, gap: float, **extra: float | bool) -> dict[str, Any]:
        params = {"epsilon": eps, "dual_lr": 0.1, **extra}
        return {"method": "fl", "params": params, "val_acc": acc, "val_gap": gap, "train_gap": 0}

    problem = {
        "dataset": "adult",
        "constraint": "dp",
        "model": "logistic",
        "dualtune": [
            row(0.005, 0.83, 0.008),
            row(0.01, 0.84, 0.016),
            row(0.005, 0.835, 0.008, temperature=2.0),  # more accurate, same gap: yes
            row(0.01, 0.845, 0.02, temperature=2.0),  # more accurate but a larger gap: no
            row(0.02, 0.85, 0.03, temperature=2.0),  # no τ 8 trial at this ε: left out
            row(0.005, 0.9, 0.0, proxy=False),  # not a proxy trial: left out
        ],
    }
    table = fairness._temperature_effect([problem])
    body = [line for line in table[2:] if line]
    assert len(body) == 2
    assert "| ε 0.005, dual_lr 0.1 |" in body[0]
    assert "| ε 0.005, dual_lr 0.1, τ 2 |" in body[0]
    assert body[0].endswith("| yes |")
    assert "| ε 0.01, dual_lr 0.1, τ 2 |" in body[1]
    assert body[1].endswith("| no |")
    assert fairness._temperature_effect([{**problem, "dualtune": problem["dualtune"][:2]}]) == []
