"""Sweep wall time: ``examples/fl_vs_erm.yaml`` through dualtune (Ray Tune + MLflow +
checkpoints + per-sample artifacts) against the same trials as plain Ray Tune with one bare
trial per config (same per-trial code, ``core.fit``, no tracking, no checkpoints) and
against the same trials one after another in a single process.

All three run in one invocation on one machine, so their ratios are comparable; absolute
times depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

import core
from core.spec import TrialConfig, load_spec
from worker.driver import run_sweep


def bare_trial(config: dict[str, Any], *, trials: dict[str, dict[str, Any]]) -> None:
    torch.set_num_threads(1)
    result = core.fit(TrialConfig.model_validate(trials[config["trial_id"]]))
    tune.report({"val/accuracy": result.final["val/accuracy"]})


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, default=Path("examples/fl_vs_erm.yaml"))
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    trials = spec.trials()
    cpus = os.cpu_count() or 1
    out: dict[str, object] = {"spec": str(args.spec), "trials": len(trials), "cpus": cpus}

    torch.set_num_threads(1)
    start = time.perf_counter()
    for t in trials:
        core.fit(t)
    out["one_process_s"] = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            start = time.perf_counter()
            tuner = tune.Tuner(
                tune.with_resources(
                    tune.with_parameters(
                        bare_trial, trials={t.trial_id: t.model_dump(mode="json") for t in trials}
                    ),
                    {"cpu": 1},
                ),
                param_space={"trial_id": tune.grid_search([t.trial_id for t in trials])},
                run_config=tune.RunConfig(storage_path=f"{tmp}/bare", name="bare", verbose=0),
            )
            tuner.fit()
            out["plain_tune_s"] = time.perf_counter() - start

            start = time.perf_counter()
            result = run_sweep(
                spec,
                sweep_id="bench",
                storage_path=Path(tmp) / "tune",
                tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                show_progress=False,
            )
            out["dualtune_s"] = time.perf_counter() - start
            out["dualtune_trials_succeeded"] = sum(
                r.outcome.status == "succeeded" for r in result.trials
            )
        finally:
            ray.shutdown()
    out["dualtune_over_plain_tune"] = float(out["dualtune_s"]) / float(out["plain_tune_s"])  # type: ignore[arg-type]
    out["dualtune_over_one_process"] = float(out["dualtune_s"]) / float(out["one_process_s"])  # type: ignore[arg-type]
    print(out)
    return out


if __name__ == "__main__":
    main()
