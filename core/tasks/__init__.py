"""Torch-side tasks: the data loaders and models of the catalog's tasks."""

from dualtune.core.tasks.base import Dataset, Split, Task
from dualtune.core.tasks.loading import load_task

__all__ = ["Dataset", "Split", "Task", "load_task"]
