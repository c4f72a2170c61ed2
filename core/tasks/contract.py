"""The task contract: what the trainer needs of a ``Task``, checked on one small batch.

A plugin task that returns a loss of the wrong shape, labels with a row too few or group
codes of the wrong dtype would otherwise fail deep inside a trial (or, worse, broadcast and
train on nonsense). ``check_task_contract`` loads the task's data, builds its model, runs
one batch of at most ``batch_size`` rows through every method the trainer calls and raises
``TaskContractError`` at the first method whose answer does not fit, naming the ``Task``
subclass, the method, what it returned and what was expected. The sweep's driver calls it
before any trial starts (``dualtune.worker.preflight``).
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS
from dualtune.core.catalog.tasks import TaskInfo
from dualtune.core.tasks.base import Dataset, Split, Task
from dualtune.core.tasks.shared_data import load_data

CHECK_BATCH = 32
T = TypeVar("T")


class TaskContractError(ValueError):
    """A task that breaks the contract of ``dualtune.Task``: ``method`` of ``task_class``
    returned what the trainer cannot use (the message says what, and what was expected)."""

    def __init__(self, task_class: str, method: str, problem: str) -> None:
        self.task_class = task_class
        self.method = method
        super().__init__(f"{task_class}.{method} {problem}")


class TaskBuilderError(TaskContractError):
    """The builder a ``TaskInfo`` names cannot be imported or is not a ``Task`` subclass."""

    def __init__(self, task: str, builder: str, problem: str) -> None:
        self.task_class = builder
        self.method = "builder"
        ValueError.__init__(self, f"task {task!r}: its builder {builder!r} {problem}")


def describe(value: object) -> str:
    """What a method returned, for a message: a tensor's shape and dtype, else its type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {shape(value)} and dtype {value.dtype}"
    if value is None:
        return "None"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def shape(t: Tensor) -> str:
    dims = tuple(int(d) for d in t.shape)
    return f"({dims[0]},)" if len(dims) == 1 else str(dims)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno})"


class _Checker:
    """The checks of one task; each failure names ``task_class.method``."""

    def __init__(self, task: Task, info: TaskInfo | None, constraint_kind: str | None) -> None:
        self.task = task
        self.info = info
        self.name = type(task).__name__
        kind = CONSTRAINT_KINDS.get(constraint_kind) if constraint_kind else None
        self.per_sample = kind is None or kind.per_sample
        self.rates = kind is None or kind.needs_classification

    def fail(self, method: str, problem: str) -> TaskContractError:
        return TaskContractError(self.name, method, problem)

    def call(self, method: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except TaskContractError:
            raise
        except Exception as exc:  # a plugin's method may raise anything
            raise self.fail(method, f"raised {type(exc).__name__}: {exc}{_where(exc)}") from exc

    # -- load
    def dataset(self) -> Dataset:
        name = self.info.name if self.info is not None else None
        data = self.call(
            "load", self.task.load if name is None else lambda: load_data(self.task, name)
        )
        if not isinstance(data, Dataset):
            raise self.fail(
                "load",
                f"returned {describe(data)}; expected a dualtune.Dataset(train, val, "
                "num_classes, group_names)",
            )
        problem = self.task.problem
        if self.info is not None and self.info.problem != problem:
            raise self.fail(
                "problem",
                f"is {problem!r} but its TaskInfo {self.info.name!r} says {self.info.problem!r}",
            )
        if problem == "classification" and (
            not isinstance(data.num_classes, int) or data.num_classes < 2
        ):
            raise self.fail(
                "load",
                f"returned num_classes={data.num_classes!r}; expected the number of classes "
                "(an int ≥ 2) of a classification task",
            )
        for split_name in ("train", "val"):
            self.split(data, split_name)
        return data

    def split(self, data: Dataset, split_name: str) -> None:
        split = getattr(data, split_name)
        where = f"returned a Dataset whose {split_name}"
        if not isinstance(split, Split):
            raise self.fail(
                "load", f"{where} is {describe(split)}; expected a dualtune.Split(x, y, groups)"
            )
        for field in ("x", "y"):
            value = getattr(split, field)
            if not isinstance(value, Tensor) or value.ndim == 0:
                raise self.fail(
                    "load",
                    f"returned {split_name}.{field} as {describe(value)}; expected a tensor "
                    "with one row per sample",
                )
        rows = int(split.x.shape[0])
        if int(split.y.shape[0]) != rows:
            raise self.fail(
                "load",
                f"returned {split_name}.x with {rows} rows and {split_name}.y with "
                f"{int(split.y.shape[0])}; expected the same number of rows (row i is sample i)",
            )
        if split_name == "train" and rows == 0:
            raise self.fail("load", "returned a train split with no rows")
        if not isinstance(split.groups, Mapping):
            raise self.fail(
                "load",
                f"returned {split_name}.groups as {describe(split.groups)}; expected a dict of "
                "group codes by attribute",
            )
        declared = self.info.group_attributes if self.info is not None else ()
        for attribute in declared:
            if attribute not in split.groups:
                raise self.fail(
                    "load",
                    f"returned no {split_name}.groups[{attribute!r}]; expected a group code "
                    "per row for each attribute its TaskInfo declares "
                    f"({', '.join(declared)})",
                )
            if attribute not in data.group_names:
                raise self.fail(
                    "load",
                    f"returned no group_names[{attribute!r}]; expected the name of each "
                    "group code of each attribute its TaskInfo declares "
                    f"({', '.join(declared)})",
                )
        for attribute, codes in split.groups.items():
            label = f"{split_name}.groups[{attribute!r}]"
            if (
                not isinstance(codes, Tensor)
                or codes.dtype != torch.int64
                or tuple(codes.shape) != (rows,)
            ):
                raise self.fail(
                    "load",
                    f"returned {label} as {describe(codes)}; expected int64 group codes of "
                    f"shape ({rows},), one per row",
                )
            names = data.group_names.get(attribute)
            if names is None:
                continue
            if rows and (int(codes.min()) < 0 or int(codes.max()) >= len(names)):
                raise self.fail(
                    "load",
                    f"returned {label} with codes {int(codes.min())}..{int(codes.max())}; "
                    f"expected codes 0..{len(names) - 1} (group_names[{attribute!r}] names "
                    f"{len(names)} groups)",
                )

    # -- the model and one batch
    def model(self, data: Dataset) -> nn.Module:
        model = self.call("make_model", self.task.make_model, data)
        if not isinstance(model, nn.Module):
            raise self.fail(
                "make_model", f"returned {describe(model)}; expected a torch.nn.Module"
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise self.fail(
                "make_model",
                f"returned a {type(model).__name__} without trainable parameters; expected a "
                "model the optimizer can train",
            )
        return model

    def batch_tensor(self, method: str, value: object, rows: int, what: str) -> Tensor:
        """``value`` must be a floating tensor of shape (rows,) with finite values."""
        if not isinstance(value, Tensor):
            raise self.fail(method, f"returned {describe(value)}; expected a tensor of {what}")
        if tuple(value.shape) != (rows,):
            raise self.fail(method, f"returned shape {shape(value)}; expected ({rows},): {what}")
        if not value.dtype.is_floating_point:
            raise self.fail(
                method, f"returned dtype {value.dtype}; expected a floating dtype: {what}"
            )
        if not bool(torch.isfinite(value).all()):
            raise self.fail(
                method, f"returned non-finite values on the first batch; expected {what}"
            )
        return value

    def batch(self, data: Dataset, model: nn.Module, rows: int) -> None:
        train = data.train
        x, y = train.x[:rows], train.y[:rows]
        groups = {k: v[:rows] for k, v in train.groups.items()}
        augmented = self.call("augment", self.task.augment, x, torch.Generator().manual_seed(0))
        if not isinstance(augmented, Tensor) or augmented.shape != x.shape:
            raise self.fail(
                "augment",
                f"returned {describe(augmented)} for inputs of shape {shape(x)}; expected the "
                "batch's inputs (augmented), of the same shape",
            )
        model.train()
        output = self.call("make_model", model, augmented)
        if not isinstance(output, Tensor) or output.ndim == 0 or int(output.shape[0]) != rows:
            raise self.fail(
                "make_model",
                f"built a model whose output on a batch of {rows} rows is "
                f"{describe(output)}; expected a tensor with one row per sample",
            )
        if not output.dtype.is_floating_point:
            raise self.fail(
                "make_model",
                f"built a model whose output has dtype {output.dtype}; expected floating "
                "outputs (losses are differentiated through them)",
            )
        losses = self.batch_tensor(
            "per_sample_loss",
            self.call("per_sample_loss", self.task.per_sample_loss, output, y),
            rows,
            "one loss per row",
        )
        if output.requires_grad and not losses.requires_grad:
            raise self.fail(
                "per_sample_loss",
                "returned losses without gradients (detached from the model's output); "
                "expected losses the trainer can differentiate",
            )
        if self.per_sample:
            self.batch_tensor(
                "sample_constraint",
                self.call("sample_constraint", self.task.sample_constraint, output, y),
                rows,
                "one constraint value g_i per row",
            )
        self.objective(model)
        if self.task.problem == "classification":
            self.rates_of(output.detach(), rows)
        self.extra_metrics(model, output.detach(), Split(x, y, groups))
        blocker = self.call("pack_blocker", self.task.pack_blocker)
        if blocker is not None and not isinstance(blocker, str):
            raise self.fail(
                "pack_blocker",
                f"returned {describe(blocker)}; expected None or the reason (a str) trials "
                "of the task cannot train as a pack",
            )

    def objective(self, model: nn.Module) -> None:
        value = self.call("objective", self.task.objective, model)
        if value is None:
            if self.info is not None and self.info.has_objective:
                raise self.fail(
                    "objective",
                    "returned None but its TaskInfo declares has_objective=True; expected "
                    "the objective as a scalar tensor",
                )
            return
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise self.fail(
                "objective",
                f"returned {describe(value)}; expected a scalar tensor (shape ()) or None",
            )
        if not value.dtype.is_floating_point or not bool(torch.isfinite(value).all()):
            raise self.fail(
                "objective",
                f"returned {value.detach().reshape(()).item()!r} ({value.dtype}); expected "
                "a finite floating scalar",
            )

    def rates_of(self, output: Tensor, rows: int) -> None:
        predicted = self.call("predictions", self.task.predictions, output)
        if not isinstance(predicted, Tensor) or tuple(predicted.shape) != (rows,):
            raise self.fail(
                "predictions",
                f"returned {describe(predicted)}; expected shape ({rows},): one predicted "
                "class per row",
            )
        if not self.rates:
            return
        score = self.batch_tensor(
            "positive_score",
            self.call("positive_score", self.task.positive_score, output),
            rows,
            "a score in [0, 1] per row of predicting the positive class",
        )
        if bool(((score < 0) | (score > 1)).any()):
            raise self.fail(
                "positive_score",
                f"returned values in [{float(score.min()):.3g}, {float(score.max()):.3g}]; "
                "expected scores in [0, 1] (a probability of the positive class)",
            )

    def extra_metrics(self, model: nn.Module, output: Tensor, split: Split) -> None:
        with torch.no_grad():
            metrics = self.call(
                "extra_metrics", self.task.extra_metrics, model, output, split, "train"
            )
        if not isinstance(metrics, Mapping):
            raise self.fail(
                "extra_metrics", f"returned {describe(metrics)}; expected a dict of metrics"
            )
        listed = self.info.extra_metrics if self.info is not None else None
        for name, value in metrics.items():
            if listed is not None and name not in {f"train/{m}" for m in listed}:
                raise self.fail(
                    "extra_metrics",
                    f"returned metric {name!r}; expected names 'train/<name>' (for prefix "
                    "'train') of the metrics its TaskInfo lists in extra_metrics "
                    f"({', '.join(listed) or 'none'})",
                )
            if not isinstance(value, Tensor | float | int) or (
                isinstance(value, Tensor) and value.numel() != 1
            ):
                raise self.fail(
                    "extra_metrics",
                    f"returned {name!r} as {describe(value)}; expected a scalar",
                )


def check_task(
    task: Task,
    info: TaskInfo | None = None,
    *,
    constraint_kind: str | None = None,
    batch_size: int = CHECK_BATCH,
) -> None:
    """Check ``task`` against the contract on one batch of at most ``batch_size`` rows.

    ``info`` (the catalog's description) adds the checks of what it declares: group
    attributes, ``has_objective``, ``extra_metrics``, ``problem``. ``constraint_kind``
    limits the checks to what that kind uses (``sample_constraint`` for per-sample kinds,
    ``positive_score`` for rate kinds); ``None`` checks everything.

    Raises:
        TaskContractError: a method broke the contract (or raised); the message names it.
    """
    checker = _Checker(task, info, constraint_kind)
    # Forked: the check must not move the caller's RNG (a driver, or a trial about to seed).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        data = checker.dataset()
        model = checker.model(data)
        checker.batch(data, model, min(batch_size, data.train.n))


def build_task(name: str, params: Mapping[str, Any]) -> tuple[Task, TaskInfo]:
    """The registered task ``name`` with ``params``, and its catalog entry; a builder that
    cannot be imported or is not a ``Task`` raises ``TaskContractError``."""
    info = TASKS[name]
    module_name, _, class_name = info.builder.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except Exception as exc:  # a plugin's import may raise anything
        raise TaskBuilderError(
            name,
            info.builder,
            f"cannot be imported: {type(exc).__name__}: {exc}{_where(exc)}",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TaskBuilderError(
            name, info.builder, f"is {cls!r}; expected a dualtune.Task subclass"
        )
    validated = info.params.model_validate(dict(params))
    try:
        task = cls(validated)
    except Exception as exc:  # a plugin's constructor may raise anything
        raise TaskContractError(
            cls.__name__, "__init__", f"raised {type(exc).__name__}: {exc}{_where(exc)}"
        ) from exc
    return task, info


def check_task_contract(
    name: str,
    params: Mapping[str, Any],
    *,
    constraint_kind: str | None = None,
    batch_size: int = CHECK_BATCH,
) -> None:
    """Build the registered task ``name`` with ``params`` and check it (``check_task``)."""
    task, info = build_task(name, params)
    check_task(task, info, constraint_kind=constraint_kind, batch_size=batch_size)
