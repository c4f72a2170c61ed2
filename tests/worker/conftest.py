"""Fixtures for sweeps on a real local Ray runtime and a real MLflow store."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch

from dualtune.core.spec import SweepSpec
from dualtune.worker.events import TrialEvent
from tests.worker.served import served  # noqa: F401  (a real service for the driver's tests)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread in this process, as the trials run (DUALTUNE_TORCH_THREADS): a
    reference computed here sums in the trials' order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """An event sink that keeps every trial event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[TrialEvent] = []

    def emit(self, event: TrialEvent) -> None:
        self.events.append(event)

    def tracking(self, experiment_id: str | None, parent_run_id: str | None) -> None:
        del experiment_id, parent_run_id


def checkpoint_numbers(storage: Path) -> list[int]:
    """The numbers of the Tune checkpoints left under ``storage``; Tune numbers a trial's
    checkpoints from 0 in the order they were saved (and keeps the last two)."""
    return sorted(int(p.name[len("checkpoint_") :]) for p in storage.rglob("checkpoint_*"))


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def small_spec(**overrides: Any) -> SweepSpec:
    doc: dict[str, Any] = {
        "name": "worker-test",
        "task": {"name": "two_moons", "params": {"n_train": 128, "n_val": 64}},
        "constraint": {"kind": "sample_loss"},
        "methods": ["erm", "rfl"],
        "grid": {"epsilon": [0.1, 0.3, 0.5], "alpha": [0.5, 2.0], "dual_lr": [0.05, 0.2]},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}},
        "logging": {"per_sample_every": 2},
    }
    doc.update(overrides)
    return SweepSpec.model_validate(doc)
