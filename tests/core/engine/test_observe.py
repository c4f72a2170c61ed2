"""A training batch's observation: under ``sample_loss`` with the task's loss as its
constraint, the trainers compute each batch's per-sample losses once and use them as the
constraint values (the same numbers the kind's ``observe`` gives); a task with its own
``sample_constraint`` goes through the kind."""

import functools
from typing import Any

import pytest
import torch

from dualtune.core.engine.pack_trainer import PackTrainer
from dualtune.core.engine.trainer import Trainer, draw_batches
from dualtune.core.spec import SweepSpec, TrialConfig


def trials(task: str, method: str, **grid: Any) -> list[TrialConfig]:
    spec = SweepSpec.model_validate(
        {
            "name": "observe",
            "task": {"name": task},
            "constraint": {"kind": "sample_loss"},
            "methods": [method],
            "grid": {"epsilon": 0.2, "dual_lr": 0.1, **grid},
            "train": {"epochs": 1, "batch_size": 32},
        }
    )
    return spec.trials()


def counting(trainer: Trainer | PackTrainer, name: str) -> list[int]:
    """Count the calls of the trainer's task method ``name``."""
    calls = [0]
    original = getattr(trainer.task, name)

    @functools.wraps(original)
    def counted(*args: Any) -> Any:
        calls[0] += 1
        return original(*args)

    setattr(trainer.task, name, counted)
    return calls


def first_batch(trainer: Trainer | PackTrainer) -> Any:
    return next(iter(draw_batches(trainer.task, trainer.data.train, 32, trainer.generator)))


@pytest.mark.parametrize("method", ["erm", "fl"])
def test_a_step_computes_the_batch_losses_once_and_they_are_the_constraint(method: str) -> None:
    (config,) = trials("digits", method)
    trainer = Trainer(config)
    assert trainer.kind.values_are_losses(trainer.task)
    batch = first_batch(trainer)
    expected = trainer.kind.observe(trainer.task, trainer.model, trainer.model(batch.x), batch)
    calls = counting(trainer, "per_sample_loss")
    observation = trainer._observe(batch)
    assert calls == [1]
    assert torch.equal(observation.constraint.values, expected.values)
    assert torch.equal(observation.constraint.index, expected.index)
    trainer.step(functools.partial(trainer._observe, batch))
    assert calls == [2]  # one more step, one more loss


def test_a_pack_computes_its_members_batch_losses_once() -> None:
    pack = PackTrainer(trials("digits", "fl", lr=[0.01, 0.02]))
    calls = counting(pack, "per_sample_loss")
    pack._observe(first_batch(pack))
    assert calls == [1]  # traced once by vmap for both members


def test_a_task_with_its_own_sample_constraint_is_observed_by_the_kind() -> None:
    (config,) = trials("iris_svm", "fl")
    trainer = Trainer(config)
    assert not trainer.kind.values_are_losses(trainer.task)  # margins, not hinge losses
    calls = counting(trainer, "sample_constraint")
    batch = first_batch(trainer)
    trainer._observe(batch)
    assert calls == [1]  # the kind's observe read the task's margins
