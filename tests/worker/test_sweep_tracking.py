"""A sweep on real Ray Tune lands in real MLflow exactly as ARCHITECTURE §3.5 lays out: a
parent run, a readably named child run per trial with every metric once per epoch, and the
figures where someone will open them (``logging.plots: best``, the default: each method's
best trial)."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib import image
from mlflow.tracking import MlflowClient

from dualtune import core
from dualtune.worker.driver import run_sweep
from dualtune.worker.tracking.run_names import child_run_name

from .conftest import small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

SPLIT = (
    "loss_mean",
    "loss_max",
    "loss_q50",
    "loss_q90",
    "loss_q99",
    "cvar_0.01",
    "cvar_0.05",
    "cvar_0.1",
    "feasible_frac",
    "accuracy",
)
CONTRACT = {f"{s}/{m}" for s in ("train", "val") for m in SPLIT} | {
    "dual/lambda_mean",
    "dual/lambda_max",
    "dual/lambda_active_frac",
    "constraint/violation_max",
    "constraint/violation_mean",
    "time/epoch_s",
    "time/samples_per_s",
}


def test_grid_sweep_makes_one_parent_and_a_child_per_trial(
    local_ray: None, tracking_uri: str, tmp_path: Path
) -> None:
    spec = small_spec()
    result = run_sweep(
        spec,
        sweep_id="grid-3x2x2",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert [r.outcome.status for r in result.trials] == ["succeeded"] * 13

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert parents[0].info.run_id == result.parent_run_id
    assert parents[0].data.tags["dualtune.sweep_id"] == "grid-3x2x2"
    # Method-aware expansion reaches Ray: ERM is not multiplied by ε, α or the dual lr.
    assert len(children) == 3 * 2 * 2 + 1
    assert sum(c.data.tags["dualtune.method"] == "erm" for c in children) == 1

    report = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=result.parent_run_id,
                artifact_path="report.json",
                dst_path=str(tmp_path / "dl"),
                tracking_uri=tracking_uri,
            )
        ).read_text()
    )
    assert [m["method"] for m in report["methods"]] == ["erm", "rfl"]
    assert all(m["best"] is not None for m in report["methods"])
    best = {m["best"]["trial_id"] for m in report["methods"]}

    trials = {t.trial_id: t for t in spec.trials()}
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == result.parent_run_id
        assert tags["dualtune.sweep_id"] == "grid-3x2x2"
        trial = trials[tags["dualtune.trial_id"]]
        assert tags["dualtune.method"] == trial.method
        assert child.info.run_name == child_run_name(trial.method, trial.params)
        assert child.data.params == trial.flat_params()
        assert child.info.status == "FINISHED"
        for name in CONTRACT:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, name)]
            assert steps == [1, 2, 3], name
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "per_sample")}
        assert {
            "per_sample/train_epoch0002.parquet",
            "per_sample/train_epoch0003.parquet",
            "per_sample/val_epoch0003.parquet",
            "per_sample/hardest.csv",
        } <= artifacts
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        drawn = {"plots/loss_cdf.png", "plots/multipliers.png"}  # no images: no hardest.png
        assert plots == (drawn if trial.trial_id in best else set()), trial.trial_id

    # The parquet's multiplier column is the trial's final multipliers: re-run one trial
    # in this process (training is deterministic on CPU) and compare.
    rfl = next(c for c in children if c.data.tags["dualtune.method"] == "rfl")
    trial = trials[rfl.data.tags["dualtune.trial_id"]]
    local = core.fit(trial)
    path = mlflow.artifacts.download_artifacts(
        run_id=rfl.info.run_id,
        artifact_path="per_sample/train_epoch0003.parquet",
        dst_path=str(tmp_path / "dl"),
        tracking_uri=tracking_uri,
    )
    frame = pd.read_parquet(path)
    assert list(frame.columns[:4]) == ["index", "loss", "multiplier", "label"]
    assert np.allclose(frame["multiplier"].to_numpy(), local.multipliers, atol=1e-6)
    assert np.allclose(frame["loss"].to_numpy(), local.per_sample["train_loss"], atol=1e-5)
    best_rfl = next(
        c
        for c in children
        if c.data.tags["dualtune.method"] == "rfl" and c.data.tags["dualtune.trial_id"] in best
    )
    png = mlflow.artifacts.download_artifacts(
        run_id=best_rfl.info.run_id,
        artifact_path="plots/loss_cdf.png",
        dst_path=str(tmp_path / "dl"),
        tracking_uri=tracking_uri,
    )
    assert image.imread(png).shape[0] > 100

    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert "report.json" in parent_artifacts
    assert {a.path for a in client.list_artifacts(result.parent_run_id, "plots")} == {
        "plots/compare_loss_cdf.png",
        "plots/pareto.png",
    }
    # Every trial succeeded with every §3.4 metric: all of them are points of the fronts.
    fronts = result.report["pareto"]["methods"]
    assert sum(len(m["points"]) for m in fronts) == len(trials)
    assert all(m["front"] for m in fronts)
