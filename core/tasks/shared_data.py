"""A sweep's data, loaded once: the driver's copy, handed to the sweep's units.

A driver under ``pack: auto`` loads each task's data to size its packs
(``core.engine.pack_memory``). Every unit used to load it again in its own process:
sklearn's import for digits (a second and more), parsing Fashion-MNIST's or CIFAR-10's files,
a plugin's own loading. Instead, what the driver loaded travels with the trainable through
Ray's object store (``tune.with_parameters``: stored once, read by every unit, on any
node), and a unit's trainers take it from there (``provide``, ``load_data``). Every unit of
a sweep then trains on the very same arrays, whatever happens to the source files
meanwhile. Data the driver did not load (``pack: off``, or a pack size given) is loaded by
each unit as before.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping

from dualtune.core.tasks.base import Dataset, Task

_recording: list[dict[str, Dataset]] = []
"""Open ``record_loads`` blocks: each collects what ``load_data`` loads inside it."""
_provided: dict[str, Dataset] = {}
"""The datasets a driver handed to this process's unit (``provide``)."""


def data_key(task_name: str, task: Task) -> str:
    """The identity of a task's data: the task's name and its validated parameters, defaults
    included (canonical JSON)."""
    params = task.params.model_dump(mode="json")
    return json.dumps([task_name, params], sort_keys=True, separators=(",", ":"))


def load_data(task: Task, task_name: str) -> Dataset:
    """``task``'s data: the copy a driver provided for it, or one an open ``record_loads``
    holds, else ``task.load()`` (then held by the innermost open ``record_loads``)."""
    key = data_key(task_name, task)
    found = _provided.get(key)
    if found is None and _recording:
        found = _recording[-1].get(key)
    if found is not None:
        return found
    data = task.load()
    if _recording:
        _recording[-1][key] = data
    return data


@contextlib.contextmanager
def record_loads(into: dict[str, Dataset] | None = None) -> Iterator[dict[str, Dataset]]:
    """Collect what ``load_data`` loads inside the block into ``into`` (a new dict by
    default), which the loads inside also reuse: a driver's check and planning load each
    task's data once between them."""
    loaded: dict[str, Dataset] = {} if into is None else into
    _recording.append(loaded)
    try:
        yield loaded
    finally:
        _recording.remove(loaded)


def provide(datasets: Mapping[str, Dataset]) -> None:
    """Make ``datasets`` (``data_key`` → data) what ``load_data`` returns in this process,
    in place of what an earlier unit here was given."""
    _provided.clear()
    _provided.update(datasets)
