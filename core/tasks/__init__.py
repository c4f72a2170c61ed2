"""Torch-side tasks: data loaders and models for the catalog's tasks (``core.catalog.tasks``)."""

from dualtune.core.tasks.base import Dataset, Split, Task
from dualtune.core.tasks.loading import load_task

__all__ = ["Dataset", "Split", "Task", "load_task"]
