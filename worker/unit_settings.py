"""What travels from the driver to each unit's process with the trainable: where to log
(``TrackingSettings``), the driver's in-process registrations (``Registrations``) and the
worker knobs of the driver's environment (``WorkerEnvironment``).

A Ray worker process is started by the runtime, not by the driver, so it sees neither the
driver's registrations nor the environment the driver has now (a variable set after the
runtime started, as a test or a notebook does): the driver captures them and the trainable
applies them before its unit builds anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from dualtune.core.catalog import CONSTRAINT_KINDS, TASKS
from dualtune.core.catalog.constraints import ConstraintKindInfo
from dualtune.core.catalog.tasks import TaskInfo

TORCH_THREADS_ENV = "DUALTUNE_TORCH_THREADS"

FORWARDED_ENV = (
    TORCH_THREADS_ENV,
    "DUALTUNE_MLFLOW_FLUSH_S",
    "DUALTUNE_WORKER_CRASH_AT",
)
"""The driver's variables a unit's process takes over (``WorkerEnvironment``)."""


@dataclass(frozen=True)
class TrackingSettings:
    tracking_uri: str
    experiment_name: str
    sweep_id: str
    parent_run_id: str | None
    retry_budget_s: float
    """The driver's ``DUALTUNE_MLFLOW_RETRY_BUDGET_S``: Ray workers do not see the driver's
    environment as it is now, so it travels with the trial."""


@dataclass(frozen=True)
class Registrations:
    """The tasks and constraint kinds the driver registered in-process
    (``dualtune.register_task``, ``register_constraint_kind``). A trial's process discovers
    the entry points again but knows nothing of these: the trainable carries them and
    registers them again before it builds its trial."""

    tasks: tuple[TaskInfo, ...] = ()
    constraint_kinds: tuple[ConstraintKindInfo, ...] = ()

    @classmethod
    def of_this_process(cls) -> Registrations:
        return cls(TASKS.registered_in_process(), CONSTRAINT_KINDS.registered_in_process())

    def apply(self) -> None:
        """Register every entry here (a no-op for one this process already has, such as
        the driver's own when a trial runs in the driver's process)."""
        for kind in self.constraint_kinds:
            if CONSTRAINT_KINDS.get(kind.name) != kind:
                CONSTRAINT_KINDS.register(kind)
        for task in self.tasks:
            if TASKS.get(task.name) != task:
                TASKS.register(task)


@dataclass(frozen=True)
class WorkerEnvironment:
    """The driver's values of ``FORWARDED_ENV`` (a name missing here is unset)."""

    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_this_process(cls) -> WorkerEnvironment:
        return cls({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})

    def apply(self) -> None:
        """Set each forwarded variable as the driver has it. One that an earlier unit of
        this process set (a worker process serves many units, of other sweeps too) and this
        driver does not have is unset again; one the process had of its own (a node's
        environment) is left alone."""
        for name in FORWARDED_ENV:
            if name in self.variables:
                os.environ[name] = self.variables[name]
                _SET_BY_A_UNIT.add(name)
            elif name in _SET_BY_A_UNIT:
                os.environ.pop(name, None)
                _SET_BY_A_UNIT.discard(name)


_SET_BY_A_UNIT: set[str] = set()


def set_torch_threads() -> None:
    """Several trials share a worker's cores; one thread each keeps them from thrashing."""
    torch.set_num_threads(max(1, int(os.environ.get(TORCH_THREADS_ENV, "1"))))
