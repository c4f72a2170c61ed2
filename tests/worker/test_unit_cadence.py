"""How often a unit checkpoints (``limits.checkpoint_every_s``) and reports to Tune, in a real
sweep (real Ray Tune, real MLflow): checkpoints at most once per period and always at the
end, reports without one about once a second; a unit that dies between two checkpoints
still resumes to the uninterrupted result with every epoch logged once."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dualtune.core.engine.fit import fit_unit
from dualtune.worker.crash_points import AFTER_LOG, CRASH_ENV
from dualtune.worker.driver import run_sweep
from dualtune.worker.unit_trainable import REPORT_EVERY_S

from .conftest import small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

EPOCHS = 4


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials run (DUALTUNE_TORCH_THREADS)
    yield
    torch.set_num_threads(threads)


def checkpoint_numbers(storage: Path) -> list[int]:
    """The numbers of the Tune checkpoints left under ``storage``; Tune numbers a trial's
    checkpoints from 0 in the order they were saved (and keeps the last two)."""
    return sorted(int(p.name[len("checkpoint_") :]) for p in storage.rglob("checkpoint_*"))


@pytest.mark.parametrize(
    ("every_s", "saved"),
    [(0.0, EPOCHS), (3600.0, 1)],
    ids=["every evaluation", "only the last"],
)
def test_a_unit_checkpoints_at_most_once_a_period_and_always_at_its_end(
    local_ray: None, tracking_uri: str, tmp_path: Path, every_s: float, saved: int
) -> None:
    spec = small_spec(
        methods=["fl"],
        grid={"epsilon": 0.3, "dual_lr": 0.1},
        train={"epochs": EPOCHS, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        logging={"per_sample_every": 2, "plots": "none"},
        limits={"checkpoint_every_s": every_s},
    )
    storage = tmp_path / "tune"
    result = run_sweep(
        spec,
        sweep_id="period",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert [r.outcome.status for r in result.trials] == ["succeeded"]
    # One evaluation per epoch: the last checkpoint's number counts every one saved before.
    assert checkpoint_numbers(storage)[-1] == saved - 1


def test_a_unit_reports_to_tune_about_once_a_second_not_at_every_epoch(
    local_ray: None, tracking_uri: str, tmp_path: Path
) -> None:
    epochs = 40  # a few milliseconds each
    spec = small_spec(
        methods=["fl"],
        grid={"epsilon": 0.3, "dual_lr": 0.1},
        train={"epochs": epochs, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        logging={"per_sample_every": 1000, "plots": "none"},
        limits={"checkpoint_every_s": 3600},
    )
    storage = tmp_path / "tune"
    result = run_sweep(
        spec,
        sweep_id="reports",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    (record,) = result.trials
    assert record.outcome.status == "succeeded"
    (results,) = storage.rglob("result.json")  # one line per report Tune took
    lines = results.read_text().splitlines()
    seconds = json.loads(lines[-1])["time_total_s"]  # the unit's time in Tune
    assert 1 <= len(lines) < epochs / 2  # not one per epoch
    assert len(lines) <= seconds / REPORT_EVERY_S + 2
    # Every epoch is in MLflow all the same.
    history = MlflowClient(tracking_uri).get_metric_history(
        record.mlflow_run_id or "", "val/loss_mean"
    )
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))


def test_a_unit_that_dies_before_its_first_checkpoint_starts_again_and_logs_each_epoch_once(
    local_ray: None,
    tracking_uri: str,
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The pack's process exits once after epoch 3's metrics reached MLflow (flushed at every
    # evaluation) with no checkpoint saved yet (the period is an hour): the retry trains
    # from the start, and the child runs' watermarks drop epochs 1-3 logged again.
    monkeypatch.setenv(CRASH_ENV, f"{AFTER_LOG}:3")
    monkeypatch.setenv("DUALTUNE_MLFLOW_FLUSH_S", "0")
    spec = small_spec(
        task={"name": "digits"},
        methods=["fl"],
        grid={"epsilon": [0.1, 0.3], "dual_lr": 0.1},
        train={"epochs": EPOCHS, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}},
        logging={"per_sample_every": 2, "plots": "none"},
        limits={"max_trials": 10, "max_failures": 1, "checkpoint_every_s": 3600},
        pack=2,
    )
    storage = tmp_path / "tune"
    result = run_sweep(
        spec,
        sweep_id="no-ckpt",
        storage_path=storage,
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert [(r.outcome.status, r.attempts) for r in result.trials] == [("succeeded", 2)] * 2
    assert checkpoint_numbers(storage) == [0]  # the retry's last: none before the crash

    uninterrupted = fit_unit(spec.trials())
    client = MlflowClient(tracking_uri)
    for r in result.trials:
        expected = uninterrupted.results[r.outcome.trial_id].final
        for name, value in expected.items():
            if "/" in name and not name.startswith("time/"):
                assert r.outcome.metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
        history = client.get_metric_history(r.mlflow_run_id or "", "val/loss_mean")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
