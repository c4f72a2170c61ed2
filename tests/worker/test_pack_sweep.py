"""Packs in a real sweep (real Ray Tune, real MLflow): each member is its own trial in every
place users look, a diverging member ends alone, and a pack whose process dies resumes
every member exactly and logs every epoch once."""

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune import core
from dualtune.core.engine.fit import fit_unit
from dualtune.worker.crash_points import AFTER_LOG, CRASH_ENV
from dualtune.worker.driver import run_sweep

from .conftest import Recorder, checkpoint_numbers, small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def test_each_member_of_a_pack_is_its_own_trial_and_a_diverging_one_ends_alone(
    local_ray: None, tracking_uri: str, tmp_path: Path, one_thread: None
) -> None:
    spec = small_spec(
        methods=["fl"],
        grid={"epsilon": [0.1, 0.3, 0.5], "dual_lr": [0.05, 0.2], "lr": [0.01, 1e9]},
        pack=6,
    )
    sink = Recorder()
    result = run_sweep(
        spec,
        sweep_id="packed",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        sink=sink,
        show_progress=False,
    )
    trials = {t.trial_id: t for t in spec.trials()}
    assert len(result.trials) == 12
    status = {r.outcome.trial_id: r.outcome.status for r in result.trials}
    assert status == {
        t: ("diverged" if trial.params["lr"] == 1e9 else "succeeded")
        for t, trial in trials.items()
    }

    # Every trial's events: running, then its own outcome.
    for trial_id, final in status.items():
        seen = [e.status for e in sink.events if e.trial_id == trial_id]
        assert seen[0] == "running", (trial_id, seen)
        assert seen[-1] == final, (trial_id, seen)

    # A succeeded member reports what its trial trains alone (float32 round-off apart).
    record = next(r for r in result.trials if r.outcome.status == "succeeded")
    reference = core.fit(trials[record.outcome.trial_id]).final
    for name, value in reference.items():
        if "/" in name and not name.startswith("time/"):
            assert record.outcome.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6)

    # logging.plots: best (the default): only the method's best trial has figures, drawn by
    # the driver from its unit's last checkpoint.
    (fl,) = result.report["methods"]
    best = (fl["best"] or fl["best_infeasible"])["trial_id"]
    client = MlflowClient(tracking_uri)
    for r in result.trials:
        run = client.get_run(r.mlflow_run_id or "")
        assert run.data.tags["dualtune.trial_id"] == r.outcome.trial_id
        assert run.data.tags["dualtune.status"] == r.outcome.status
        files = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        if r.outcome.trial_id == best:
            assert files == {"plots/loss_cdf.png", "plots/multipliers.png"}
        else:
            assert files == set()
        if r.outcome.status == "succeeded":
            history = client.get_metric_history(run.info.run_id, "train/loss_mean")
            assert sorted(m.step for m in history) == [1, 2, 3]
            tables = {a.path for a in client.list_artifacts(run.info.run_id, "per_sample")}
            assert {"per_sample/train_epoch0002.parquet", "per_sample/hardest.csv"} <= tables
        else:
            assert "diverged at epoch 1" in (r.outcome.error or "")
            assert run.info.status == "FAILED"


@pytest.mark.parametrize(
    ("every_s", "checkpoints"),
    # Every evaluation: epochs 1 and 2 saved as 0 and 1, the crash, epochs 3 and 4 as 2 and 3.
    [(0.0, [2, 3]), (3600.0, [0])],
    ids=["resumed from epoch 2's checkpoint", "started again: no checkpoint yet"],
)
def test_a_pack_that_dies_between_logging_and_its_checkpoint_logs_every_epoch_once(
    local_ray: None,
    tracking_uri: str,
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    every_s: float,
    checkpoints: list[int],
) -> None:
    # The unit's process exits once after epoch 3's metrics reached MLflow (flushed at every
    # evaluation) and before epoch 3's checkpoint: it resumes from epoch 2's (a checkpoint
    # at every evaluation) or from the start (one an hour: none saved yet), trains the
    # epochs since again, and the child runs' watermarks drop those MLflow already has (the
    # issue's fresh-clone run saw steps [1, 2, 3, 3]).
    monkeypatch.setenv(CRASH_ENV, f"{AFTER_LOG}:3")
    monkeypatch.setenv("DUALTUNE_MLFLOW_FLUSH_S", "0")
    spec = small_spec(
        task={"name": "digits"},
        methods=["fl"],
        grid={"epsilon": [0.1, 0.2, 0.3], "dual_lr": 0.1},
        train={"epochs": 4, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}},
        logging={"per_sample_every": 2, "plots": "none"},
        limits={"max_trials": 10, "max_failures": 1, "checkpoint_every_s": every_s},
        pack=3,
    )
    storage = tmp_path / "tune"
    result = run_sweep(
        spec,
        sweep_id="crash-pack",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert [(r.outcome.status, r.attempts) for r in result.trials] == [("succeeded", 2)] * 3
    assert checkpoint_numbers(storage) == checkpoints  # the last two, numbered from 0

    uninterrupted = fit_unit(spec.trials())  # resumed exactly
    client = MlflowClient(tracking_uri)
    for r in result.trials:
        expected = uninterrupted.results[r.outcome.trial_id].final
        for name, value in expected.items():
            if "/" in name and not name.startswith("time/"):
                assert r.outcome.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
        for name in ("train/loss_mean", "val/loss_mean"):
            history = client.get_metric_history(r.mlflow_run_id or "", name)
            assert sorted(m.step for m in history) == [1, 2, 3, 4], name
        assert client.list_artifacts(r.mlflow_run_id or "", "plots") == []  # plots: none
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" in r.data.tags]) == 3


def test_a_retry_reruns_only_the_named_members_packed_again(
    local_ray: None, tracking_uri: str, tmp_path: Path
) -> None:
    spec = small_spec(methods=["fl"], grid={"epsilon": [0.1, 0.3, 0.5], "lr": [0.01, 1e9]}, pack=6)
    first = run_sweep(
        spec,
        sweep_id="retry",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    diverged = [r.outcome.trial_id for r in first.trials if r.outcome.status == "diverged"]
    assert len(diverged) == 3
    finished = [
        (r.outcome, r.mlflow_run_id) for r in first.trials if r.outcome.trial_id not in diverged
    ]
    retried = run_sweep(
        spec,
        sweep_id="retry",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
        only=diverged,
        experiment_name="retry-retry1",
        finished=finished,
    )
    assert sorted(r.outcome.trial_id for r in retried.trials) == sorted(diverged)
    assert all(r.outcome.status == "diverged" for r in retried.trials)
    units = (tmp_path / "tune" / "retry-retry1" / "dualtune_units.json").read_text()
    assert all(t in units for t in diverged)
    (fl,) = retried.report["methods"]
    assert (fl["trials"], fl["succeeded"]) == (6, 3)  # the report covers the whole sweep
