"""The task contract check: every built-in task passes; each kind of defect a plugin task
can have is refused with a message naming the ``Task`` subclass and the method."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dualtune.core.catalog import TASKS
from dualtune.core.catalog.tasks import TaskInfo, TaskParams
from dualtune.core.tasks.base import Dataset, Split, Task
from dualtune.core.tasks.contract import (
    TaskBuilderError,
    TaskContractError,
    build_task,
    check_task,
    check_task_contract,
)

ROWS = 40


class Params(TaskParams):
    pass


def _split(n: int) -> Split:
    g = torch.Generator().manual_seed(n)
    return Split(
        torch.randn(n, 3, generator=g),
        torch.randint(0, 2, (n,), generator=g),
        {"side": torch.randint(0, 2, (n,), generator=g)},
    )


class GoodTask(Task):
    """A correct binary classification task with a group attribute."""

    problem = "classification"

    def load(self) -> Dataset:
        return Dataset(_split(ROWS), _split(16), 2, {"side": ("left", "right")})

    def make_model(self, data: Dataset) -> nn.Module:
        return nn.Linear(data.train.x.shape[1], 2)


INFO = TaskInfo(
    "good",
    "a test task",
    "classification",
    Params,
    f"{__name__}:GoodTask",
    group_attributes=("side",),
)


def _refused(task: Task, *, info: TaskInfo | None = INFO, kind: str | None = None) -> str:
    with pytest.raises(TaskContractError) as caught:
        check_task(task, info, constraint_kind=kind)
    return str(caught.value)


def test_a_correct_task_passes_and_the_callers_rng_is_untouched() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    check_task(GoodTask(Params()), INFO)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["two_moons", "digits", "iris_svm", "polyfit", "convection"])
def test_the_built_in_tasks_keep_the_contract(name: str) -> None:
    check_task_contract(name, {})


def test_a_loss_of_the_wrong_shape_is_named_with_what_was_expected() -> None:
    class MyTask(GoodTask):
        def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
            return super().per_sample_loss(output, y).unsqueeze(1)

    message = _refused(MyTask(Params()))
    assert message == (
        "MyTask.per_sample_loss returned shape (32, 1); expected (32,): one loss per row"
    )


def test_a_mean_loss_instead_of_one_per_row_is_refused() -> None:
    class MeanLoss(GoodTask):
        def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
            return super().per_sample_loss(output, y).mean()

    assert "MeanLoss.per_sample_loss returned shape ()" in _refused(MeanLoss(Params()))


def test_a_detached_or_non_finite_loss_is_refused() -> None:
    class Detached(GoodTask):
        def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
            return super().per_sample_loss(output, y).detach()

    class NotFinite(GoodTask):
        def per_sample_loss(self, output: Tensor, y: Tensor) -> Tensor:
            return super().per_sample_loss(output, y) * float("nan")

    assert "Detached.per_sample_loss returned losses without gradients" in _refused(
        Detached(Params())
    )
    assert "NotFinite.per_sample_loss returned non-finite values" in _refused(NotFinite(Params()))


def test_load_must_return_a_dataset_of_splits_with_matching_rows() -> None:
    class NotADataset(GoodTask):
        def load(self) -> Dataset:
            return {"train": _split(ROWS)}  # type: ignore[return-value]

    class RowShort(GoodTask):
        def load(self) -> Dataset:
            train = _split(ROWS)
            return Dataset(Split(train.x, train.y[:-1], {}), _split(16), 2, {"side": ("a", "b")})

    class NoClasses(GoodTask):
        def load(self) -> Dataset:
            return Dataset(_split(ROWS), _split(16), None, {"side": ("a", "b")})

    assert _refused(NotADataset(Params())).startswith(
        "NotADataset.load returned a builtins.dict; expected a dualtune.Dataset"
    )
    assert (
        "RowShort.load returned train.x with 40 rows and train.y with 39; expected the same "
        "number of rows" in _refused(RowShort(Params()))
    )
    assert "NoClasses.load returned num_classes=None" in _refused(NoClasses(Params()))


def test_group_codes_must_be_int64_per_row_in_range_for_each_declared_attribute() -> None:
    class Int32Groups(GoodTask):
        def load(self) -> Dataset:
            data = super().load()
            train = data.train
            groups = {"side": train.groups["side"].to(torch.int32)}
            return Dataset(Split(train.x, train.y, groups), data.val, 2, data.group_names)

    class MissingGroup(GoodTask):
        def load(self) -> Dataset:
            data = super().load()
            return Dataset(Split(data.train.x, data.train.y), data.val, 2, data.group_names)

    class OutOfRange(GoodTask):
        def load(self) -> Dataset:
            data = super().load()
            return Dataset(data.train, data.val, 2, {"side": ("only",)})

    assert (
        "Int32Groups.load returned train.groups['side'] as a tensor of shape (40,) and dtype "
        "torch.int32; expected int64 group codes of shape (40,)" in _refused(Int32Groups(Params()))
    )
    assert "MissingGroup.load returned no train.groups['side']" in _refused(MissingGroup(Params()))
    assert "expected codes 0..0" in _refused(OutOfRange(Params()))


def test_make_model_must_return_a_trainable_module_with_one_output_row_per_sample() -> None:
    class NotAModule(GoodTask):
        def make_model(self, data: Dataset) -> nn.Module:
            return lambda x: x  # type: ignore[return-value]

    class Frozen(GoodTask):
        def make_model(self, data: Dataset) -> nn.Module:
            return nn.Linear(3, 2).requires_grad_(False)

    class Flattened(GoodTask):
        def make_model(self, data: Dataset) -> nn.Module:
            return nn.Sequential(nn.Linear(3, 2), nn.Flatten(0))

    assert "NotAModule.make_model returned a builtins.function; expected a torch.nn.Module" in (
        _refused(NotAModule(Params()))
    )
    assert "Frozen.make_model returned a Linear without trainable parameters" in _refused(
        Frozen(Params())
    )
    assert (
        "Flattened.make_model built a model whose output on a batch of 32 rows is a tensor of "
        "shape (64,)" in _refused(Flattened(Params()))
    )


def test_a_method_that_raises_is_named_with_its_error() -> None:
    class Raises(GoodTask):
        def sample_constraint(self, output: Tensor, y: Tensor) -> Tensor:
            raise RuntimeError("forgot to implement")

    message = _refused(Raises(Params()), kind="sample_loss")
    assert message.startswith(
        "Raises.sample_constraint raised RuntimeError: forgot to implement (at "
    )
    assert "test_contract.py:" in message
    # sample_constraint is only read by per-sample kinds
    check_task(Raises(Params()), INFO, constraint_kind="class_loss")


def test_predictions_and_positive_scores_of_a_classification_task() -> None:
    class PredictsTwoColumns(GoodTask):
        def predictions(self, output: Tensor) -> Tensor:
            return output

    class ScoreAboveOne(GoodTask):
        def positive_score(self, output: Tensor) -> Tensor:
            return output[:, 1].exp() + 1

    assert "PredictsTwoColumns.predictions returned a tensor of shape (32, 2)" in _refused(
        PredictsTwoColumns(Params())
    )
    assert "ScoreAboveOne.positive_score returned values in [" in _refused(
        ScoreAboveOne(Params()), kind="group_rate"
    )


def test_the_objective_is_a_scalar_or_none_as_the_task_info_declares() -> None:
    class VectorObjective(GoodTask):
        def objective(self, model: nn.Module) -> Tensor | None:
            return torch.ones(3)

    declared = TaskInfo(**{**INFO.__dict__, "has_objective": True})
    assert _refused(VectorObjective(Params())) == (
        "VectorObjective.objective returned a tensor of shape (3,) and dtype torch.float32; "
        "expected a scalar tensor (shape ()) or None"
    )
    assert "GoodTask.objective returned None but its TaskInfo declares has_objective=True" in (
        _refused(GoodTask(Params()), info=declared)
    )


def test_extra_metrics_must_be_listed_in_the_task_info() -> None:
    class Extra(GoodTask):
        def extra_metrics(
            self, model: nn.Module, output: Tensor, split: Split, prefix: str
        ) -> dict[str, Tensor]:
            return {f"{prefix}/margin": output.abs().mean()}

    listed = TaskInfo(**{**INFO.__dict__, "extra_metrics": ("margin",)})
    check_task(Extra(Params()), listed)
    assert "Extra.extra_metrics returned metric 'train/margin'" in _refused(Extra(Params()))


def test_augment_must_keep_the_batch_shape() -> None:
    class Crops(GoodTask):
        def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
            return x[:, :2]

    assert _refused(Crops(Params())) == (
        "Crops.augment returned a tensor of shape (32, 2) and dtype torch.float32 for inputs "
        "of shape (32, 3); expected the batch's inputs (augmented), of the same shape"
    )


def test_a_builder_that_is_not_a_task_or_does_not_import_is_named() -> None:
    for builder, expected in [
        ("no_such_module_xyz:Task", "cannot be imported: ModuleNotFoundError"),
        (f"{__name__}:ROWS", "is 40; expected a dualtune.Task subclass"),
    ]:
        info = TaskInfo("broken_builder", "x", "classification", Params, builder)
        TASKS.register(info)
        try:
            with pytest.raises(TaskBuilderError, match=expected) as caught:
                build_task("broken_builder", {})
            assert str(caught.value).startswith(f"task 'broken_builder': its builder {builder!r} ")
        finally:
            TASKS.unregister("broken_builder")
