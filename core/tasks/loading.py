"""Build a torch-side task from the catalog entry named in a spec, importing it lazily."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from dualtune.core.catalog import TASKS
from dualtune.core.tasks.base import Task


def load_task(name: str, params: Mapping[str, Any]) -> Task:
    """Instantiate task ``name`` with validated ``params``."""
    try:
        info = TASKS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}"
        ) from None
    module_name, _, class_name = info.builder.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    task: Task = cls(info.params.model_validate(dict(params)))
    return task
