"""Wall-clock timers for the pieces of a sweep, for the P3 breakdown (``bench/packing.py``).

``Recorder.wrap`` replaces a function or method by one that records every call's start,
end and *exclusive* time (its duration less the time of timed calls nested in it), so the
exclusive times of the pieces of one call add up to that call's duration.

In the driver the recorder patches ``worker.driver``'s helpers directly. In Ray's worker
processes, ``install_worker_timers`` (a Ray ``worker_process_setup_hook``) patches the
unit trainable, the pack trainer and the MLflow logger *when they are first imported*, so
that importing them (torch, MLflow) stays where it happens without the timers, and writes
one JSON line per call to ``$DUALTUNE_BENCH_TIMINGS/<pid>.jsonl``. The first import of a
few heavy packages (``HEAVY``) is timed too, so that what a piece spends importing them is
counted apart from its own work.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ENV = "DUALTUNE_BENCH_TIMINGS"


@dataclass
class Call:
    name: str
    start: float
    """``time.time()`` at the call (comparable across processes)."""
    end: float
    exclusive: float
    pid: int


@dataclass
class Recorder:
    sink: Path | None = None
    calls: list[Call] = field(default_factory=list)
    _threads: threading.local = field(default_factory=threading.local)
    """Per thread, the inner time of each timed call open on it (a driver connects to Ray
    on a thread of its own while its main thread imports)."""

    @property
    def _nested(self) -> list[float]:
        nested: list[float] | None = getattr(self._threads, "nested", None)
        if nested is None:
            nested = self._threads.nested = []
        return nested

    def record(self, call: Call) -> None:
        self.calls.append(call)
        if self.sink is not None:
            with self.sink.open("a") as f:
                f.write(json.dumps(call.__dict__) + "\n")

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the block as a call named ``name`` (nested in any timed call around it)."""
        self._nested.append(0.0)
        wall, t0 = time.time(), time.perf_counter()
        try:
            yield
        finally:
            duration = time.perf_counter() - t0
            inner = self._nested.pop()
            if self._nested:
                self._nested[-1] += duration
            self.record(Call(name, wall, wall + duration, duration - inner, os.getpid()))

    def wrap(self, owner: Any, attribute: str, name: str) -> Callable[[], None]:
        """Time calls of ``owner.attribute`` as ``name``; returns the undo."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)

    @contextlib.contextmanager
    def patched(self, targets: Sequence[tuple[Any, str, str]]) -> Iterator[Recorder]:
        undo = [self.wrap(owner, attribute, name) for owner, attribute, name in targets]
        try:
            yield self
        finally:
            for u in reversed(undo):
                u()


def driver_targets() -> list[tuple[Any, str, str]]:
    """The sweep driver's pieces outside Tune (``worker.driver`` imports them by name)."""
    import ray.tune

    import dualtune.worker.driver as d

    return [
        (d, "ResilientClient", "driver: MLflow client"),
        (d, "ensure_experiment", "driver: MLflow experiment"),
        (d, "ensure_parent_run", "driver: MLflow parent run"),
        (d, "connect_ray", "driver: Ray connect"),
        (d, "set_aside_if_stale", "driver: Tune state check"),
        (d, "log_best_figures", "driver: best trials' figures"),
        (d, "_units", "driver: plan units (pack: auto)"),
        (ray.tune.Tuner, "fit", "driver: Tuner.fit"),
        (d, "build_report", "driver: report"),
        (d, "_final_train_losses", "driver: report"),
        (d, "log_sweep_report", "driver: MLflow sweep report"),
    ]


def _worker_targets(module: ModuleType) -> list[tuple[Any, str, str]]:
    name = module.__name__
    if name == "dualtune.worker.unit_trainable":
        return [
            (module, "run_unit", "trial: run_unit (rest)"),
            (module, "fit_unit", "train: fit_unit loop"),
            (module._Unit, "_report", "tune: checkpoint + report"),
        ]
    if name == "dualtune.core.engine.pack_trainer":
        c = module.PackTrainer
        return [
            (c, "__init__", "train: build pack (task, model)"),
            (c, "train_epoch", "train: epochs"),
            (c, "evaluate", "train: evaluation"),
            (c, "per_sample", "train: per-sample arrays"),
        ]
    if name == "dualtune.worker.tracking.trial_run":
        c = module.TrialRunLogger
        return [
            (c, m, f"mlflow: {m}")
            for m in (
                "__post_init__",
                "completed",
                "start",
                "log_metrics",
                "log_per_sample",
                "log_final",
                "set_status_tag",
                "finish",
            )
        ]
    return []


WATCHED = (
    "dualtune.worker.unit_trainable",
    "dualtune.core.engine.pack_trainer",
    "dualtune.worker.tracking.trial_run",
)
HEAVY = (
    "torch",
    "torch._dynamo",  # imported by the first torch optimizer a process builds
    "numpy",
    "scipy",
    "sklearn",
    "pandas",
    "pyarrow",
    "matplotlib",
    "mlflow",
    "sqlalchemy",
    "alembic",
)
"""Packages whose first import is timed on its own (exclusive of what it imports in turn)."""


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in WATCHED and fullname not in HEAVY:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module
        recorder = self.recorder

        def exec_and_patch(module: ModuleType) -> None:
            with recorder.timed(f"import: {module.__name__}"):
                exec_module(module)
            for owner, attribute, name in _worker_targets(module):
                recorder.wrap(owner, attribute, name)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def process_started() -> float:
    """When this process started (``time.time()`` scale), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path("/proc/self/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return boot + start_ticks / ticks


def install_worker_timers() -> None:
    """Ray ``worker_process_setup_hook``: time this worker's trial pieces (if asked)."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    recorder = Recorder(Path(directory) / f"{os.getpid()}.jsonl")
    now = time.time()
    recorder.record(Call("process: start → setup hook", process_started(), now, 0.0, os.getpid()))
    sys.meta_path.insert(0, _PatchOnImport(recorder))


def read_worker_calls(directory: Path) -> dict[int, list[Call]]:
    """Every worker process's calls, by pid."""
    out: dict[int, list[Call]] = {}
    for path in sorted(directory.glob("*.jsonl")):
        pid = int(path.stem)
        calls = [Call(**json.loads(line)) for line in path.read_text().splitlines() if line]
        out[pid] = calls
    return out
