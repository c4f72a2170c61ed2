"""A sweep's Tune state is keyed to its tracking store (issue 15, item 6): the same spec run
again into a fresh MLflow store runs afresh there and logs every trial, instead of restoring
its finished Tune experiment into a parent run with no children; run again into the store
that holds its runs, it still restores."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dualtune.core.spec import SweepSpec
from dualtune.worker.driver import run_sweep
from dualtune.worker.tracking.sweep_run import parent_run_filter
from tests.worker.conftest import small_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

SWEEP_ID = "stale-resume"


def _spec() -> SweepSpec:
    return small_spec(
        name="stale-resume",
        methods=["erm", "rfl"],
        grid={"epsilon": [0.3], "alpha": [0.5], "dual_lr": [0.05]},
        train={"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
    )


def _logged(uri: str) -> tuple[str, dict[str, dict[str, float]]]:
    """The store's parent run of the sweep, and each child run's trial id → its metrics."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stale-resume")
    assert experiment is not None
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string=parent_run_filter(SWEEP_ID)
    )
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    return parent.info.run_id, {
        c.data.tags["dualtune.trial_id"]: dict(c.data.metrics) for c in children
    }


def test_a_fresh_store_gets_every_trial_and_the_store_that_has_them_restores(
    local_ray: None, tmp_path: Path
) -> None:
    del local_ray
    storage = tmp_path / "tune"
    store_a = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    store_b = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    for store in (store_a, store_b):
        Path(store.removeprefix("sqlite:///")).parent.mkdir()
    trial_ids = {t.trial_id for t in _spec().trials()}
    assert len(trial_ids) == 2

    first = run_sweep(
        _spec(), sweep_id=SWEEP_ID, storage_path=storage, tracking_uri=store_a, show_progress=False
    )
    parent_a, children_a = _logged(store_a)
    assert set(children_a) == trial_ids
    assert all(children_a.values())  # each child has its metrics

    # The same store again: the finished experiment is restored, nothing re-runs or moves.
    again = run_sweep(
        _spec(), sweep_id=SWEEP_ID, storage_path=storage, tracking_uri=store_a, show_progress=False
    )
    assert _logged(store_a) == (parent_a, children_a)
    assert [r.mlflow_run_id for r in again.trials] == [r.mlflow_run_id for r in first.trials]
    assert [p.name for p in storage.iterdir()] == [SWEEP_ID]

    # A fresh store: the sweep runs afresh and logs there, every child with its metrics.
    fresh = run_sweep(
        _spec(), sweep_id=SWEEP_ID, storage_path=storage, tracking_uri=store_b, show_progress=False
    )
    parent_b, children_b = _logged(store_b)
    assert fresh.parent_run_id == parent_b
    assert set(children_b) == trial_ids
    for trial_id in trial_ids:
        assert set(children_b[trial_id]) == set(children_a[trial_id])
    assert {r.mlflow_run_id for r in fresh.trials}.isdisjoint(
        {r.mlflow_run_id for r in first.trials}
    )
    # The earlier Tune results are set aside, not deleted; store A keeps its runs.
    (aside,) = [p for p in storage.iterdir() if p.name.startswith(f"{SWEEP_ID}.stale-")]
    assert aside.is_dir()
    assert _logged(store_a) == (parent_a, children_a)
