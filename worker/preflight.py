"""The driver's first step: check the sweep where it runs, before any trial starts.

The service accepts a task it does not know when the spec's ``runtime.pip`` installs it
where the sweep runs; the driver is the first place where that plugin is importable. So the
driver discovers the plugins again, requires the task to be registered (else it names the
task, the pip requirements and every plugin that failed to load), validates the whole spec
again with the task known (the plugin's parameter schema and the constraint-kind fit come
out here, naming their fields), and runs the task contract check on one batch
(``dualtune.core.tasks.contract``). Any failure is a ``InvalidSweepError`` whose message is the
sweep's error: ``dualtune run`` prints it, a service-launched driver fails the sweep with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS, plugin_errors
from dualtune.core.spec import SpecError, SweepSpec, load_spec
from dualtune.core.tasks.contract import CHECK_BATCH, TaskContractError, check_task_contract


class InvalidSweepError(ValueError):
    """The sweep cannot run here; the message says why, for the person who submitted it."""


def unregistered_task_message(name: str, pip: list[str]) -> str:
    """Why task ``name`` is missing here: its plugin's load error when one is named so,
    else the tasks there are; every plugin error either way."""
    where = f"runtime.pip: {', '.join(pip)}" if pip else "the spec has no runtime.pip"
    errors = plugin_errors()
    own = [e for e in errors if e.group == TASKS.group and e.name == name]
    others = [e for e in errors if e not in own]
    message = f"task {name!r} is not registered where the sweep runs ({where})"
    if own:
        message += ": its plugin failed to load: " + "; ".join(e.describe() for e in own)
    else:
        message += (
            f"; registered tasks: {', '.join(sorted(TASKS))}. A distribution in runtime.pip "
            f"must declare a {TASKS.group!r} entry point named {name!r}"
        )
    if others:
        lines = "".join(f"\n  - {e.group}: {e.describe()}" for e in others)
        message += f"\n{'Other plugins' if own else 'Plugins'} that failed to load:{lines}"
    return message


def check_sweep(spec: SweepSpec | Mapping[str, Any]) -> SweepSpec:
    """The sweep ``spec`` (a model or the stored document), validated where it runs.

    Raises:
        InvalidSweepError: the task is not registered here, the spec does not validate with it,
            or the task breaks the task contract.
    """
    TASKS.reload()
    CONSTRAINT_KINDS.reload()
    document = spec.model_dump(mode="json") if isinstance(spec, SweepSpec) else dict(spec)
    task = document.get("task")
    name = task.get("name") if isinstance(task, Mapping) else None
    if isinstance(name, str) and name not in TASKS:
        runtime = document.get("runtime")
        pip = runtime.get("pip") if isinstance(runtime, Mapping) else None
        raise InvalidSweepError(unregistered_task_message(name, [str(r) for r in pip or []]))
    try:
        validated = load_spec(document)
    except SpecError as exc:
        raise InvalidSweepError(f"the spec is not valid where the sweep runs:\n{exc}") from None
    # dualtune's own tasks are covered by its tests, and some read data the driver's machine
    # may not hold (cifar10's data_dir on the GPU workers): the contract check is for plugins.
    if not TASKS.built_in(validated.task.name):
        try:
            check_task_contract(
                validated.task.name,
                validated.task.params,
                constraint_kind=validated.constraint.kind,
                batch_size=min(validated.train.batch_size, CHECK_BATCH),
            )
        except TaskContractError as exc:
            source = TASKS.source(validated.task.name)
            raise InvalidSweepError(
                f"task {validated.task.name!r} (from {source}) breaks the task contract: {exc}"
            ) from None
    return validated
