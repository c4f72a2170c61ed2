"""Helpers to build trial configs for engine tests from a small spec document."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from dualtune.core.spec import SweepSpec, TrialConfig


def make_trial(
    method: str,
    *,
    task: dict[str, Any] | None = None,
    constraint: dict[str, Any] | None = None,
    grid: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    dual: dict[str, Any] | None = None,
) -> TrialConfig:
    spec = SweepSpec.model_validate(
        {
            "name": "engine-test",
            "task": task or {"name": "two_moons"},
            "constraint": constraint or {"kind": "sample_loss"},
            "methods": [method],
            "grid": grid or {},
            "train": train or {"epochs": 3, "batch_size": 128},
            **({"dual": dual} if dual else {}),
        }
    )
    trials = spec.trials()
    assert len(trials) == 1, "give one value per grid key"
    return trials[0]


@pytest.fixture
def trial() -> Callable[..., TrialConfig]:
    return make_trial


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Trials run on one torch thread in the worker, and a reduction over another number of
    threads sums in another order: tests that compare runs bit for bit use one too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
