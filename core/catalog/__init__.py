"""What dualtune can run: tasks, constraint kinds and methods, with their parameters.

Pure data and pydantic models (no torch): the spec validates against it and the service's
``GET /catalog`` serves it. Tasks and constraint kinds come from entry points (``registry``),
the built-in ones too; their torch-side builders are named by import path and loaded lazily.
"""

from dualtune.core.catalog.constraints import ConstraintKindInfo, ConstraintParams
from dualtune.core.catalog.grid_keys import GRID_KEY_DEFAULTS, GRID_KEYS, GridKeyInfo
from dualtune.core.catalog.methods import (
    METHODS,
    MethodInfo,
    kinds_for,
    method_applies,
    methods_for,
)
from dualtune.core.catalog.registry import (
    CONSTRAINT_KINDS,
    TASKS,
    PluginError,
    plugin_errors,
    register_constraint_kind,
    register_task,
)
from dualtune.core.catalog.tasks import TaskInfo, TaskParams

__all__ = [
    "CONSTRAINT_KINDS",
    "GRID_KEYS",
    "GRID_KEY_DEFAULTS",
    "METHODS",
    "TASKS",
    "ConstraintKindInfo",
    "ConstraintParams",
    "GridKeyInfo",
    "MethodInfo",
    "PluginError",
    "TaskInfo",
    "TaskParams",
    "kinds_for",
    "method_applies",
    "methods_for",
    "plugin_errors",
    "register_constraint_kind",
    "register_task",
]
