"""A sweep's data is loaded once (``core.tasks.shared_data``): what the driver loaded to check
the sweep and plan its packs reaches every unit through Ray's object store, in a real local
Ray sweep."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualtune.core.spec import SweepSpec
from dualtune.worker.driver import run_sweep
from tests.worker.plugins import COUNTED, registered

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture
def counted_task() -> Iterator[str]:
    with registered(COUNTED) as name:
        yield name


def spec(task: str, loads: Path, pack: str | int) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "shared-data",
            "task": {"name": task, "params": {"n_train": 32, "loads": str(loads)}},
            "constraint": {"kind": "sample_loss"},
            "methods": ["fl"],
            "grid": {"epsilon": [0.1, 0.2, 0.3, 0.4], "dual_lr": 0.1},
            "train": {"epochs": 2, "batch_size": 16},
            "logging": {"per_sample_every": 1000, "plots": "none"},
            "pack": pack,
        }
    )


@pytest.mark.parametrize("pack", ["auto", "off"])
def test_the_units_train_on_the_data_the_driver_loaded(
    local_ray: None, counted_task: str, tracking_uri: str, tmp_path: Path, pack: str
) -> None:
    # The driver loads a plugin task's data for its contract check (and, under pack: auto,
    # to size the packs): once, and no unit loads it again.
    loads = tmp_path / "loads.txt"
    loads.touch()
    result = run_sweep(
        spec(counted_task, loads, pack),
        sweep_id=f"shared-{pack}",
        storage_path=tmp_path / "tune",
        tracking_uri=tracking_uri,
        show_progress=False,
    )
    assert {r.outcome.status for r in result.trials} == {"succeeded"}
    assert loads.read_text().split() == [str(os.getpid())]
