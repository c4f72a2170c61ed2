"""Early stopping across the units of a sweep: the rung board (ARCHITECTURE §3.1).

Ray Tune's schedulers decide for a Tune trial, which here is a unit: they could stop a
whole pack but not one member of it. So the decision lives in one named Ray actor per Tune
experiment, the **rung board**, which every unit asks when its members reach a rung, a unit
of one exactly as a pack (``core.early_stopping.Rungs`` ranks them). The unit then ends the
members the board stops, each as ``stopped`` with the metrics of that evaluation, and trains
the others on. A unit whose members all stopped ends, which is how Tune sees its trial stop.

The board runs on the driver's node and keeps its records in the experiment's folder
(``RUNGS_FILE``, rewritten after each decision), so a driver started again for the sweep
takes them back and answers every unit that asks again as it did before.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dualtune.core.early_stopping import Rungs
from dualtune.core.spec import SweepSpec

RUNGS_FILE = "dualtune_rungs.json"
"""The board's records, next to the Tune experiment."""


class _Board:
    """The actor's body: a sweep's ``Rungs``, saved after every decision."""

    def __init__(self, rungs: Rungs, path: str) -> None:
        self.rungs = rungs
        self.path = Path(path)
        if self.path.exists():
            self.rungs.load_json(json.loads(self.path.read_text()))

    def decide(self, rung: int, members: Mapping[str, Mapping[str, float]]) -> dict[str, bool]:
        decisions = self.rungs.decide(rung, members)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rungs.to_json()))
        os.replace(tmp, self.path)
        return decisions


_RemoteBoard = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(_Board)


@dataclass
class RungBoard:
    """What a unit holds of the board: its name, the rungs, and (once looked up) the actor."""

    name: str
    namespace: str
    rungs: tuple[int, ...]
    _actor: Any = field(default=None, repr=False, compare=False)
    """The driver's handle keeps the actor alive (a non-detached actor ends with its last
    handle); a unit's copy looks it up by name."""

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "rungs": self.rungs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.namespace = state["name"], state["namespace"]
        self.rungs, self._actor = tuple(state["rungs"]), None

    def decide(self, rung: int, members: Mapping[str, Mapping[str, float]]) -> dict[str, bool]:
        """Whether each of ``members`` (trial id → metrics at ``rung``) goes on."""
        if self._actor is None:
            self._actor = ray.get_actor(self.name, namespace=self.namespace)
        decisions: dict[str, bool] = ray.get(self._actor.decide.remote(rung, dict(members)))
        return decisions


def start_board(spec: SweepSpec, experiment: Path, *, name: str, trials: int) -> RungBoard | None:
    """The board of the experiment of ``trials`` trials, started on this (the driver's)
    node; ``None`` without ``early_stopping``. ``name`` tells the experiments of one Ray
    cluster apart."""
    if spec.early_stopping is None:
        return None
    rungs = Rungs.of(spec.early_stopping, spec.selection, spec.train.epochs, trials)
    experiment.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ValueError):  # an earlier driver's: its records are in the file
        ray.kill(ray.get_actor(name, namespace=ray.get_runtime_context().namespace))
    node = ray.get_runtime_context().get_node_id()
    namespace = ray.get_runtime_context().namespace
    actor = _RemoteBoard.options(
        name=name,
        namespace=namespace,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(rungs, str(experiment / RUNGS_FILE))
    return RungBoard(name, namespace, rungs.rungs, actor)
