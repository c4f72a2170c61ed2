"""Early stopping in a real sweep (real Ray Tune, real MLflow): the rung board decides for
the members of every unit, packed or not; a stopped trial ends ``stopped`` everywhere users
look (events, outcome, its child run, the report) with the metrics it had and its final
tables, and the report says what the sweep saved. Every trial keeps its best feasible
evaluation beside its last one."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune.core.spec.metric_names import BEST_FEASIBLE_EPOCH, EPOCHS_RUN
from dualtune.worker.driver import run_sweep
from dualtune.worker.rung_board import RUNGS_FILE

from .conftest import Recorder, small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def test_a_sweep_that_stops_early_ends_its_stopped_trials_everywhere(
    local_ray: None, tracking_uri: str, tmp_path: Path, one_thread: None
) -> None:
    # 9 trials in 3 packs of 3 (units that reach a rung at different times), 9 epochs,
    # rungs at 1 and 3: a member goes on only in the top third of those recorded there.
    spec = small_spec(
        methods=["fl"],
        grid={"epsilon": [0.1, 0.3, 0.5], "dual_lr": [0.05, 0.2, 1.0]},
        train={"epochs": 9, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        pack=3,
        selection={"metric": "val/loss_mean", "subject_to": {"train/feasible_frac": {"min": 0.8}}},
        early_stopping={"grace_epochs": 1, "reduction_factor": 3},
        logging={"per_sample_every": 4, "plots": "none"},
    )
    sink = Recorder()
    storage = tmp_path / "tune"
    result = run_sweep(
        spec,
        sweep_id="early",
        storage_path=storage,
        tracking_uri=tracking_uri,
        sink=sink,
        show_progress=False,
    )
    outcomes = {r.outcome.trial_id: r for r in result.trials}
    rungs = json.loads((storage / "early" / RUNGS_FILE).read_text())["decisions"]
    assert len(rungs["1"]) == 9  # every trial was judged at the first rung
    went_on = {t for t, go in rungs["1"].items() if go} & {
        t for t, go in rungs.get("3", {}).items() if go
    }
    stopped_at = {
        **{t: 1 for t, go in rungs["1"].items() if not go},
        **{t: 3 for t, go in rungs.get("3", {}).items() if not go},
    }
    assert stopped_at, "the board stopped nobody"
    assert went_on, "the board stopped everybody"

    client = MlflowClient(tracking_uri)
    for trial_id, record in outcomes.items():
        outcome = record.outcome
        run = client.get_run(record.mlflow_run_id or "")
        seen = [e.status for e in sink.events if e.trial_id == trial_id]
        tables = {a.path for a in client.list_artifacts(run.info.run_id, "per_sample")}
        assert "per_sample/hardest.csv" in tables  # its final tables, stopped or not
        assert run.info.status == "FINISHED"
        if trial_id in stopped_at:
            epoch = stopped_at[trial_id]
            assert outcome.status == "stopped"
            assert seen[-1] == "stopped"
            assert run.data.tags["dualtune.status"] == "stopped"
            assert outcome.metrics[EPOCHS_RUN] == epoch  # the metrics it had at its rung
            history = client.get_metric_history(run.info.run_id, "train/loss_mean")
            assert sorted(m.step for m in history) == list(range(1, epoch + 1))
            assert f"per_sample/train_epoch{epoch:04d}.parquet" in tables
        else:
            assert outcome.status == "succeeded"
            assert outcome.metrics[EPOCHS_RUN] == 9
        # The best feasible evaluation beside the last one: in the outcome and the run.
        if BEST_FEASIBLE_EPOCH in outcome.metrics:
            assert 1 <= outcome.metrics[BEST_FEASIBLE_EPOCH] <= outcome.metrics[EPOCHS_RUN]
            assert outcome.metrics["best_feasible/train/feasible_frac"] >= 0.8
            assert run.data.metrics[BEST_FEASIBLE_EPOCH] == outcome.metrics[BEST_FEASIBLE_EPOCH]

    report = result.report
    run_epochs = sum(int(r.outcome.metrics[EPOCHS_RUN]) for r in result.trials)
    assert report["compute"]["epochs_run"] == run_epochs
    assert report["compute"]["epochs_asked"] == 9 * 9
    assert report["compute"]["stopped"] == len(stopped_at)
    assert report["trial_counts"]["stopped"] == len(stopped_at)
    (fl,) = report["methods"]
    assert fl["succeeded"] + fl["stopped"] == 9  # a stopped trial counts for selection
