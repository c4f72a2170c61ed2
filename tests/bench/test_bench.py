"""Tiny versions of every benchmark, so that ``make bench`` does not rot between runs."""

import os
from pathlib import Path
from typing import Any

import pytest

from bench import figures, packing, per_sample_logging, run_all, step_overhead, timers
from dualtune.core.spec import load_spec

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
                timers.Call("trial: run_pack (rest)", 104.0, 109.0, 0.5, 7),
                timers.Call("train: epochs", 104.5, 105.5, 1.0, 7),
                timers.Call("mlflow: log_final", 106.0, 109.0, 3.0, 7),
            ]
        },
        wall_s=11.0,
    )
    assert breakdown["timeline"]["the trial itself (run_pack)"] == pytest.approx(5.0)
    assert sum(breakdown["timeline"].values()) == pytest.approx(breakdown["fit_s"])
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
        "target": 0.1,
        "breakdown": breakdown,
    }


def test_render_and_figures(small_results: dict[str, Any], tmp_path: Path) -> None:
    results = {
        **small_results,
        "p3": _fake_p3(),
        "meta": {"machine": "m", "started": "s", "finished": "f", "command": "c"},
    }
    text = run_all.render(results, "## P4: kept\n")
    assert "**P3 = dualtune (packed) ÷ plain Tune = 0.120** — **missed**" in text
    assert "## P5" in text
    assert "## Memory per member" in text
    assert "P1 worst" in text
    assert text.endswith("## P4: kept\n")
    figures.draw(results, tmp_path)
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "p3.png",
        "p1p2.png",
        "scaling.png",
        "memory.png",
    }


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_instrumented_packed_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    sink = tmp_path / "timings"
    sink.mkdir()
    monkeypatch.setenv(timers.ENV, str(sink))
    monkeypatch.setenv("PYTHONPATH", os.getcwd())
    packing._init_ray(
        2, runtime_env={"worker_process_setup_hook": "bench.timers.install_worker_timers"}
    )
    try:
        recorder = timers.Recorder()
        spec = load_spec({**TINY_SWEEP, "pack": 2})
        run = packing._dualtune(spec, "tiny", tmp_path, recorder)
    finally:
        ray.shutdown()
    assert run["succeeded"] == 2
    assert run["units"] == 1
    breakdown = packing._breakdown(recorder.calls, timers.read_worker_calls(sink), run["wall_s"])
    assert len(breakdown["units"]) == 1
    assert breakdown["all_units_pieces"]["train: epochs"] > 0
    assert breakdown["critical_categories"]["MLflow logging and plots (their imports apart)"] > 0
