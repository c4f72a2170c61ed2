"""dualtune: constrained-learning sweeps (Feasible Learning, resilient FL, ALM, SAL, νPI) on
Ray Tune with MLflow tracking, as a service or from Python.

The public Python API (ARCHITECTURE §3.3). ``import dualtune`` is cheap: it imports neither
torch nor Ray nor MLflow; each name below loads its module on first use.

* Specs: ``SweepSpec``, ``TrialConfig``, ``load_spec``.
* Your own task: subclass ``Task`` (``load() -> Dataset`` of ``Split``s, ``make_model``),
  describe it with a ``TaskInfo`` whose ``params`` is a ``TaskParams`` subclass, and register
  it with a ``dualtune.tasks`` entry point or ``register_task(info)``.
* Your own constraint: a ``ConstraintKind`` builder described by a ``ConstraintKindInfo``
  (``params``: a ``ConstraintParams`` subclass), by a ``dualtune.constraints`` entry point or
  ``register_constraint_kind(info)``.
* Running: ``fit(config)`` trains one trial here; ``run_sweep(spec)`` runs a sweep on local
  Ray (``dualtune run``); ``Client`` talks to a dualtune service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualtune.core.catalog.constraints import ConstraintKindInfo, ConstraintParams
    from dualtune.core.catalog.registry import register_constraint_kind, register_task
    from dualtune.core.catalog.tasks import TaskInfo, TaskParams
    from dualtune.core.engine.constraints import Batch, ConstraintKind, KindContext
    from dualtune.core.engine.fit import fit
    from dualtune.core.engine.observation import ConstraintBatch
    from dualtune.core.spec import SweepSpec, TrialConfig, load_spec
    from dualtune.core.tasks.base import Dataset, Split, Task
    from dualtune.service.client import Client, ClientError
    from dualtune.worker.run import run_sweep

__version__ = "0.1.0"

_HOMES = {
    "SweepSpec": "dualtune.core.spec",
    "TrialConfig": "dualtune.core.spec",
    "load_spec": "dualtune.core.spec",
    "TaskInfo": "dualtune.core.catalog.tasks",
    "TaskParams": "dualtune.core.catalog.tasks",
    "ConstraintKindInfo": "dualtune.core.catalog.constraints",
    "ConstraintParams": "dualtune.core.catalog.constraints",
    "register_task": "dualtune.core.catalog.registry",
    "register_constraint_kind": "dualtune.core.catalog.registry",
    "Task": "dualtune.core.tasks.base",
    "Dataset": "dualtune.core.tasks.base",
    "Split": "dualtune.core.tasks.base",
    "ConstraintKind": "dualtune.core.engine.constraints",
    "KindContext": "dualtune.core.engine.constraints",
    "Batch": "dualtune.core.engine.constraints",
    "ConstraintBatch": "dualtune.core.engine.observation",
    "fit": "dualtune.core.engine.fit",
    "Client": "dualtune.service.client",
    "ClientError": "dualtune.service.client",
    "run_sweep": "dualtune.worker.run",
}

__all__ = [
    "Batch",
    "Client",
    "ClientError",
    "ConstraintBatch",
    "ConstraintKind",
    "ConstraintKindInfo",
    "ConstraintParams",
    "Dataset",
    "KindContext",
    "Split",
    "SweepSpec",
    "Task",
    "TaskInfo",
    "TaskParams",
    "TrialConfig",
    "fit",
    "load_spec",
    "register_constraint_kind",
    "register_task",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dualtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
