"""Early stopping: dualtune's feasibility-aware successive halving against training every
trial to the end, and against the peer a user would pick, plain Ray Tune's ``ASHAScheduler``
on one metric.

The sweep is ``examples/early_stopping_digits.yaml``: 27 resilient-FL configurations on
sklearn's digits, 27 epochs, selection ``val/cvar_0.1`` (min) subject to
``train/feasible_frac >= 0.95``, early stopping at rungs 3 and 9 (reduction factor 3).

* **everything**: the sweep without ``early_stopping`` (``run_sweep``: real Ray Tune, a real
  MLflow store; the 27 trials train as one pack, ``pack: 27``). Its best feasible trial is
  the truth.
* **dualtune, packed**: the sweep as written: the rung board halves the pack's members.
* **everything / dualtune, unpacked** (``pack: off``): 27 Tune trials, 2 at a time on this
  machine, which reach the rungs one by one.
* **Ray Tune ASHA**: plain Ray Tune, a function trainable per configuration (dualtune's
  unpacked ``Trainer``, ``tune.report`` every epoch, no MLflow) and
  ``ASHAScheduler(metric="val/cvar_0.1", mode="min", grace_period=3, reduction_factor=3,
  max_t=27)``: Ray's schedulers rank by one metric, feasibility unseen.

Each run's best feasible trial is chosen by the same rule (``core.reporting``) from the
metrics each trial ended with. **replay**: the 27 trials' full histories (``fit_unit``, no
Ray) halved offline by our rule and by the metric-only rule at other grace periods and
factors: how much the outcome depends on the setting.

    python -m bench.early_stopping          # prints the results as JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXAMPLE = Path("examples/early_stopping_digits.yaml")
REPLAY = [(g, rf) for g in (1, 2, 3, 5) for rf in (2.0, 3.0)]


def _best(finals: Mapping[str, Mapping[str, float]], selection: Any) -> str | None:
    from dualtune.core.reporting import meets_bounds, score

    feasible = [t for t, m in finals.items() if meets_bounds(m, selection.subject_to)]
    if not feasible:
        return None
    return min(feasible, key=lambda t: score(finals[t], selection.metric, selection.mode))


def _sweep(spec: Any, directory: Path, sweep_id: str) -> dict[str, Any]:
    from dualtune.core.spec.metric_names import EPOCHS_RUN
    from dualtune.worker.driver import UNITS_FILE, run_sweep

    started = time.perf_counter()
    result = run_sweep(
        spec,
        sweep_id=sweep_id,
        storage_path=directory / "tune",
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
        show_progress=False,
    )
    wall = time.perf_counter() - started
    finals = {r.outcome.trial_id: dict(r.outcome.metrics) for r in result.trials}
    units = json.loads((Path(result.experiment_path) / UNITS_FILE).read_text())
    return {
        "wall_s": wall,
        "units": len(units),
        "best": _best(finals, spec.selection),
        "epochs_run": sum(int(m.get(EPOCHS_RUN, 0)) for m in finals.values()),
        "epochs_asked": spec.train.epochs * len(finals),
        "stopped": sum(r.outcome.status == "stopped" for r in result.trials),
        "finals": finals,
    }


def _asha_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    from dualtune.core.engine.trainer import Trainer
    from dualtune.core.spec import TrialConfig

    trial = TrialConfig.model_validate(config["trial"])
    trainer = Trainer(trial)
    while trainer.epoch < trial.train.epochs:
        trainer.train_epoch()
        tune.report({k: v for k, v in trainer.evaluate().items() if "/" in k})


def _ray_asha(spec: Any, directory: Path) -> dict[str, Any]:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trials = spec.trials()
    stopping = spec.early_stopping
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        metric=spec.selection.metric,
        mode=spec.selection.mode,
        max_t=spec.train.epochs,
        grace_period=stopping.grace_epochs,
        reduction_factor=stopping.reduction_factor,
    )
    started = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(_asha_trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search([t.model_dump(mode="json") for t in trials])},
        tune_config=tune.TuneConfig(scheduler=scheduler),
        run_config=tune.RunConfig(storage_path=str(directory / "asha"), verbose=0),
    ).fit()
    wall = time.perf_counter() - started
    finals = {}
    for i in range(len(grid)):
        result = grid[i]
        finals[result.config["trial"]["trial_id"]] = dict(result.metrics or {})
    return {
        "wall_s": wall,
        "best": _best(finals, spec.selection),
        "epochs_run": sum(int(m.get("training_iteration", 0)) for m in finals.values()),
        "epochs_asked": spec.train.epochs * len(finals),
        "stopped": sum(
            int(m.get("training_iteration", 0)) < spec.train.epochs for m in finals.values()
        ),
        "finals": finals,
    }


def _halve(
    histories: Mapping[str, list[dict[str, float]]],
    rule: Any,
    grace: int,
    factor: float,
    epochs: int,
) -> dict[str, Any]:
    from dualtune.core.early_stopping import Rungs, rung_epochs

    rungs = Rungs(rule, factor, rung_epochs(grace, factor, epochs), len(histories))
    alive, finals = set(histories), {}
    for rung in rungs.rungs:
        at = {t: histories[t][rung - 1] for t in sorted(alive)}
        for trial_id, goes_on in rungs.decide(rung, at).items():
            if not goes_on:
                finals[trial_id] = at[trial_id]
                alive.discard(trial_id)
    finals.update({t: histories[t][-1] for t in alive})
    return {
        "finals": finals,
        "share": sum(int(m["epoch"]) for m in finals.values()) / (epochs * len(histories)),
    }


def _replay(spec: Any) -> list[dict[str, Any]]:
    from dualtune.core.engine.fit import fit_unit
    from dualtune.core.spec import Selection

    result = fit_unit(spec.trials())
    histories = {t: r.history for t, r in result.results.items()}
    epochs = spec.train.epochs
    truth = _best({t: h[-1] for t, h in histories.items()}, spec.selection)
    metric_only = Selection(metric=spec.selection.metric, mode=spec.selection.mode)
    rows = []
    for grace, factor in REPLAY:
        row: dict[str, Any] = {"grace": grace, "factor": factor}
        for name, rule in (("feasibility", spec.selection), ("metric_only", metric_only)):
            halved = _halve(histories, rule, grace, factor, epochs)
            row[name] = {
                "same": _best(halved["finals"], spec.selection) == truth,
                "share": halved["share"],
            }
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    import ray
    import torch

    from bench import machine
    from dualtune.core.spec import load_spec

    torch.set_num_threads(1)
    spec = load_spec(EXAMPLE)
    everything = spec.model_copy(update={"early_stopping": None})
    unpacked = spec.model_copy(update={"pack": "off"})
    everything_unpacked = everything.model_copy(update={"pack": "off"})
    results: dict[str, Any] = {"machine": machine.describe(), "spec": str(EXAMPLE)}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runs = {
                "everything": _sweep(everything, root / "everything", "everything"),
                "packed": _sweep(spec, root / "packed", "packed"),
                "everything_unpacked": _sweep(
                    everything_unpacked, root / "everything-unpacked", "everything-unpacked"
                ),
                "unpacked": _sweep(unpacked, root / "unpacked", "unpacked"),
                "ray_asha": _ray_asha(spec, root),
            }
    finally:
        ray.shutdown()
    truth = runs["everything"]["best"]
    for run in runs.values():
        run["same_best"] = run["best"] == truth and truth is not None
        run["share"] = run["epochs_run"] / run["epochs_asked"]
        best = run["best"]
        run["best_metrics"] = (
            {
                k: run["finals"][best].get(k)
                for k in (spec.selection.metric, *spec.selection.subject_to)
            }
            if best
            else None
        )
        del run["finals"]
    results["runs"] = runs
    results["params"] = {t.trial_id: dict(t.params) for t in spec.trials()}
    results["replay"] = _replay(spec)
    return results


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


LABELS = {
    "everything": "every trial to the end, one pack (no early stopping)",
    "packed": "dualtune early_stopping, one pack (as written)",
    "everything_unpacked": "every trial to the end, `pack: off`",
    "unpacked": "dualtune early_stopping, `pack: off` (arrivals one by one)",
    "ray_asha": "plain Ray Tune `ASHAScheduler` on `val/cvar_0.1`",
}


def render(r: dict[str, Any]) -> list[str]:
    runs, params = r["runs"], r["params"]
    truth = runs["everything"]["best"]

    def shown(trial_id: str | None) -> str:
        if trial_id is None:
            return "none met the bound"
        p = params[trial_id]
        return f"ε={p['epsilon']} α={p['alpha']} η={p['dual_lr']}"

    lines = [
        "## Early stopping: feasibility-aware successive halving",
        "",
        f"`{r['spec']}` (27 resilient-FL configurations on digits, 27 epochs; selection "
        "`val/cvar_0.1` subject to `train/feasible_frac ≥ 0.95`; rungs at 3 and 9 epochs, "
        "factor 3) run five ways on a local Ray runtime of 2 CPUs (`bench/early_stopping.py`). "
        "The target (issue 17): the same best feasible trial as without early stopping, with "
        "≤ 50 % of the epochs.",
        "",
        "| run | Tune trials | best feasible trial | same as without | epochs run / asked "
        "| stopped | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        lines.append(
            f"| {LABELS[name]} | {run.get('units', 27)} | {shown(run['best'])} "
            f"| {'yes' if run['same_best'] else '**no**'} "
            f"| {run['epochs_run']} / {run['epochs_asked']} ({_pct(run['share'])}) "
            f"| {run['stopped']} | {run['wall_s']:.0f} |"
        )
    packed = runs["packed"]
    met = packed["same_best"] and packed["share"] <= 0.5
    lines += [
        "",
        f"**Packed: {'met' if met else 'missed'}** — the best feasible trial "
        f"({shown(truth)}) {'is' if packed['same_best'] else 'is not'} the one found without "
        f"early stopping, with {_pct(packed['share'])} of the epochs.",
    ]
    unpacked, alone = runs["unpacked"], runs["everything_unpacked"]
    lines += [
        f"Wall time: one pack {packed['wall_s']:.0f} s with early stopping against "
        f"{runs['everything']['wall_s']:.0f} s without; `pack: off` {unpacked['wall_s']:.0f} s "
        f"against {alone['wall_s']:.0f} s. A pack's epoch costs about as much for 9 members "
        "as for 27 (one vmapped step over small models), so stopping members inside a pack "
        "saves epochs of compute rather than wall time on CPU; units of one that stop free "
        "their core for the next trial.",
    ]
    asha = runs["ray_asha"]
    lines += [
        "Ray Tune's ASHA on the selection metric alone "
        + (
            "found the same trial"
            if asha["same_best"]
            else f"found {shown(asha['best'])} instead: ranked by CVaR alone, the eventual best "
            "feasible trial fell below trials that end infeasible at a rung and was stopped"
        )
        + f", with {_pct(asha['share'])} of the epochs.",
        "",
        "**Replay** (the 27 trials' full histories halved offline, our rule against the "
        "metric-only rule; whether the best feasible trial is the same, and the epochs share):",
        "",
        "| grace | factor | feasibility-aware | metric only |",
        "|---|---|---|---|",
    ]
    for row in r["replay"]:
        cells = [
            f"{'same' if row[k]['same'] else '**other**'}, {_pct(row[k]['share'])}"
            for k in ("feasibility", "metric_only")
        ]
        lines.append(f"| {row['grace']} | {row['factor']:g} | {cells[0]} | {cells[1]} |")
    same = sum(row["feasibility"]["same"] for row in r["replay"])
    same_metric = sum(row["metric_only"]["same"] for row in r["replay"])
    lines += [
        "",
        f"Feasibility-aware halving kept the best feasible trial at {same} of "
        f"{len(r['replay'])} settings, metric-only halving at {same_metric}. The outcome "
        "depends on the problem: on a noisier grid tried while designing this one (FL, "
        "ε × dual lr × lr, SGD at lr 0.05, batch 64) the trials' ranks swung from epoch to "
        "epoch and early rungs lost the eventual best at most settings; a first rung past "
        "the noisy start (`grace_epochs`) is the knob.",
        "",
    ]
    return lines


if __name__ == "__main__":
    print(json.dumps(main(), indent=1, default=str))
