"""A task registered in-process (``dualtune.register_task``, as in a notebook) runs in a
real local Ray sweep: the trials' processes do not see the driver's registrations, so the
trainable carries them and registers them again there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dualtune.core.catalog import TASKS
from dualtune.core.spec import SweepSpec
from dualtune.worker.driver import run_sweep
from dualtune.worker.unit_settings import Registrations
from tests.worker.plugins import TINY, registered

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture
def tiny_task() -> Iterator[str]:
    with registered(TINY) as name:
        yield name


def test_registrations_are_applied_once(tiny_task: str) -> None:
    carried = Registrations.of_this_process()
    assert TINY in carried.tasks
    carried.apply()  # the driver's own process has them already: a no-op
    carried.apply()
    assert TASKS[tiny_task] is TINY


def test_a_sweep_of_a_task_registered_in_process_runs_on_ray(
    local_ray: None, tiny_task: str, tracking_uri: str, tmp_path: Path
) -> None:
    spec = SweepSpec.model_validate(
        {
            "name": "in-process",
            "task": {"name": tiny_task, "params": {"n_train": 32}},
            "constraint": {"kind": "sample_loss"},
            # erm trains alone, the two fl trials as a pack: both trainables register it
            "methods": ["erm", "fl"],
            "grid": {"epsilon": [0.2, 0.4], "dual_lr": 0.1},
            "train": {"epochs": 2, "batch_size": 16},
            "logging": {"per_sample_every": 1000},
        }
    )
    result = run_sweep(
        spec,
        sweep_id="in-process",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    outcomes = {r.outcome.trial_id: (r.outcome.status, r.outcome.error) for r in result.trials}
    assert set(outcomes.values()) == {("succeeded", None)}, outcomes
    assert len(outcomes) == 3
    assert all(r.outcome.metrics["train/loss_mean"] > 0 for r in result.trials)
