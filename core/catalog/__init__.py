"""What dualtune can run: tasks, constraint kinds and methods, with their parameters.

Pure data and pydantic models (no torch): the spec validates against it and the service's
``GET /catalog`` serves it. Task builders are named by import path and loaded lazily.
"""

from dualtune.core.catalog.constraints import CONSTRAINT_KINDS, ConstraintKindInfo
from dualtune.core.catalog.grid_keys import GRID_KEY_DEFAULTS, GRID_KEYS, GridKeyInfo
from dualtune.core.catalog.methods import METHODS, MethodInfo
from dualtune.core.catalog.tasks import TASKS, TaskInfo

__all__ = [
    "CONSTRAINT_KINDS",
    "GRID_KEYS",
    "GRID_KEY_DEFAULTS",
    "METHODS",
    "TASKS",
    "ConstraintKindInfo",
    "GridKeyInfo",
    "MethodInfo",
    "TaskInfo",
]
