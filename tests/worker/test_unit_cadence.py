"""How often a unit checkpoints (``limits.checkpoint_every_s``) and reports to Tune, in a real
sweep (real Ray Tune, real MLflow): checkpoints at most once per period and always at the
end, reports without one about once a second. A unit that dies between two checkpoints:
``test_pack_sweep``."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune.worker.driver import run_sweep
from dualtune.worker.unit_trainable import REPORT_EVERY_S

from .conftest import checkpoint_numbers, small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

EPOCHS = 4


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
