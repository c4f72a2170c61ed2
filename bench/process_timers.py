"""Timers for whole processes, for the P6 breakdown (``bench/sweep_overhead.py``) and the
worker side of P3's (``bench/packing.py``).

``dualtune run`` starts processes that a benchmark cannot reach from Python: the CLI, the
driver it spawns (``python -m dualtune.worker run``) and Ray's workers. ``site_dir`` writes
a ``sitecustomize.py`` that calls ``install`` at interpreter start in every one of them
whose ``PYTHONPATH`` names that folder; with ``$DUALTUNE_BENCH_P6`` unset it does nothing.

* Ray workers (any process that is neither the CLI nor the driver) time their trial pieces
  as ``bench/timers.py`` does (``install_worker_timers``, also P3's Ray setup hook).
* The CLI and the driver write ``<role>.jsonl`` to ``$DUALTUNE_BENCH_P6``: their start, the
  first import of Ray, torch and MLflow, the driver's pieces (``timers.driver_targets``,
  ``run_sweep``, every ``ray.init`` and the address it was given) and their exit.

Two differences from ``bench/timers.py`` (whose names of what to wrap are reused):

* A process's start is read against ``CLOCK_BOOTTIME``, not ``/proc/stat``'s ``btime``
  (whole seconds: up to a second off against ``time.time()`` of another process).
* A name ``bench/timers.py`` wraps that the code no longer has is skipped and listed in
  ``missing.txt`` next to the timings, instead of failing the import that would patch it
  (which would fail the trial, and the benchmark with it).
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import timers

ENV = "DUALTUNE_BENCH_P6"
"""Folder for the CLI's and the driver's timings; the workers' go to ``timers.ENV``."""
EXEC_ENV = "DUALTUNE_BENCH_P6_EXEC_AT"
"""When the CLI exec'd into the driver (``time.time()``), for the driver's start."""
MISSING_FILE = "missing.txt"
DRIVER_MODULE = "dualtune.worker.driver"
DRIVER_IMPORTS = ("ray", "torch", "mlflow", DRIVER_MODULE)
"""Imports the driver's timeline shows apart (each exclusive of the others)."""


def process_started(pid: int | str = "self") -> float:
    """When process ``pid`` started, on the ``time.time()`` scale, to a clock tick."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return booted + start_ticks / ticks


def _missing_log() -> Path | None:
    directory = os.environ.get(timers.ENV) or os.environ.get(ENV)
    return Path(directory) / MISSING_FILE if directory else None


def tolerate_missing_targets() -> None:
    """Make ``timers.Recorder.wrap`` skip (and list) a name the code no longer has.

    Patched on the class because ``bench/timers.py`` builds its own recorders; only the
    benchmark's processes run this."""
    wrap = timers.Recorder.wrap
    if getattr(wrap, "tolerant", False):
        return

    @functools.wraps(wrap)
    def tolerant(self: timers.Recorder, owner: Any, attribute: str, name: str) -> Any:
        if hasattr(owner, attribute):
            return wrap(self, owner, attribute, name)
        log = _missing_log()
        if log is not None:
            where = getattr(owner, "__name__", repr(owner))
            with log.open("a") as f:
                f.write(f"{where}.{attribute} ({name})\n")
        return lambda: None

    tolerant.tolerant = True  # type: ignore[attr-defined]
    timers.Recorder.wrap = tolerant  # type: ignore[method-assign]


UNIT_PATH = "dualtune.worker.unit_trainable"
"""The one unit path's trainable (issue 15), which ``bench/timers.py`` does not name yet."""


def _unit_path_targets(module: ModuleType) -> list[tuple[Any, str, str]]:
    """What the unit path is timed by where ``bench/timers.py`` names nothing in it."""
    if module.__name__ != UNIT_PATH:
        return []
    unit = getattr(module, "_Unit", None)
    return [
        (module, "run_unit", "trial: run_unit (rest)"),
        (module, "fit_unit", "train: fit_unit loop"),
        (unit, "_report", "tune: checkpoint + report"),
        (unit, "_checkpoint", "tune: checkpoint state"),
    ]


def extend_targets() -> None:
    """Let ``bench/timers.py``'s import hook also time the unit path (``UNIT_PATH``), as
    long as its own lists name nothing there: patched on the module, in the benchmark's
    processes only, so that the benchmark keeps measuring while the trainable moves."""
    if getattr(timers._worker_targets, "extended", False):
        return
    own = timers._worker_targets

    def targets(module: ModuleType) -> list[tuple[Any, str, str]]:
        return own(module) or _unit_path_targets(module)

    targets.extended = True  # type: ignore[attr-defined]
    timers._worker_targets = targets
    if UNIT_PATH not in timers.WATCHED:
        # One module more than the tuple bench/timers.py declares.
        timers.WATCHED = (*timers.WATCHED, UNIT_PATH)  # type: ignore[assignment]


def driver_targets() -> list[tuple[Any, str, str]]:
    """``timers.driver_targets`` and the driver's newer pieces, where the driver has them."""
    import dualtune.worker.driver as d

    named = timers.driver_targets()
    wrapped = {(id(owner), attribute) for owner, attribute, _ in named}
    extra = [
        t
        for t in [(d, "log_best_figures", "driver: MLflow best figures")]
        if (id(t[0]), t[1]) not in wrapped  # bench/timers.py names it already
    ]
    return [t for t in (*named, *extra) if hasattr(t[0], t[1])]


def missing_driver_targets() -> list[str]:
    return [f"worker.driver.{a} ({n})" for o, a, n in timers.driver_targets() if not hasattr(o, a)]


def read_missing(*directories: Path) -> list[str]:
    """The names that timers wanted to wrap and the code does not have, once each."""
    found: set[str] = set()
    for d in directories:
        path = d / MISSING_FILE
        if path.exists():
            found.update(line for line in path.read_text().splitlines() if line)
    return sorted(found)


def install_worker_timers() -> None:
    """Ray ``worker_process_setup_hook`` (and what ``install`` runs in a Ray worker): as
    ``timers.install_worker_timers``, with the process's start read to the tick and names
    the code lacks skipped."""
    directory = os.environ.get(timers.ENV)
    if not directory:
        return
    tolerate_missing_targets()
    extend_targets()
    recorder = timers.Recorder(Path(directory) / f"{os.getpid()}.jsonl")
    now = time.time()
    recorder.record(
        timers.Call("process: start → setup hook", process_started(), now, 0.0, os.getpid())
    )
    sys.meta_path.insert(0, timers._PatchOnImport(recorder))


def _role(argv: Sequence[str]) -> str:
    if any(a.endswith("dualtune.worker") for a in argv) and "run" in argv:
        return "driver"
    if len(argv) > 1 and Path(argv[1]).name == "dualtune":
        return "cli"
    return "worker"


class _TimeDriver(importlib.abc.MetaPathFinder):
    """Times the first import of ``DRIVER_IMPORTS``; once the driver module exists, wraps
    its pieces."""

    def __init__(self, recorder: timers.Recorder) -> None:
        self.recorder = recorder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in DRIVER_IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        loader, recorder = spec.loader, self.recorder
        exec_module = loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            with recorder.timed(f"import: {module.__name__}"):
                exec_module(module)
            if module.__name__ == "ray":
                _wrap_ray_init(recorder, module)
            if module.__name__ == DRIVER_MODULE:
                for owner, attribute, name in [
                    *driver_targets(),
                    (module, "run_sweep", "driver: run_sweep"),
                ]:
                    recorder.wrap(owner, attribute, name)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def _wrap_ray_init(recorder: timers.Recorder, ray: ModuleType) -> None:
    """Time ``ray.init`` under a name that says whether it joined a runtime or started one
    (``connect_ray`` and the old ``_init_ray`` both end in it)."""
    init: Callable[..., Any] = vars(ray)["init"]  # a module object: mypy cannot see it

    @functools.wraps(init)
    def timed(*args: Any, **kwargs: Any) -> Any:
        address = kwargs.get("address", args[0] if args else None)
        how = "start a local runtime" if address in (None, "local") else f"join {address}"
        with recorder.timed(f"ray.init: {how}"):
            return init(*args, **kwargs)

    setattr(ray, "init", timed)  # noqa: B010  (a module object: mypy cannot see ray.init)


def install() -> None:
    """What the generated ``sitecustomize`` runs in every process (see the docstring)."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    role = _role(sys.orig_argv)
    if role == "worker":
        install_worker_timers()
        return
    tolerate_missing_targets()
    recorder = timers.Recorder(Path(directory) / f"{role}.jsonl")
    # A driver the CLI exec'd into keeps the CLI's pid, so its start in /proc is the CLI's:
    # the CLI passes the moment it exec'd instead.
    exec_at = os.environ.pop(EXEC_ENV, None)
    started, now = float(exec_at) if exec_at else process_started(), time.time()
    recorder.record(timers.Call("process: start → site", started, now, 0.0, os.getpid()))
    if role == "driver":
        sys.meta_path.insert(0, _TimeDriver(recorder))

    def exited() -> None:
        # Registered before Ray's own atexit hook, so it runs after Ray's shutdown.
        at = time.time()
        recorder.record(timers.Call("process: exit", at, at, 0.0, os.getpid()))

    atexit.register(exited)
    _record_exit_before(recorder, os, "_exit")  # no atexit hook runs there
    _record_exit_before(recorder, os, "execv")


def _record_exit_before(recorder: timers.Recorder, owner: ModuleType, name: str) -> None:
    """Record the process's exit when it calls ``owner.name`` (``os._exit``, or ``os.execv``
    into another program: that one's start is this moment, passed in ``EXEC_ENV``)."""
    call: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(call)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        at = time.time()
        recorder.record(timers.Call("process: exit", at, at, 0.0, os.getpid()))
        if name == "execv":
            os.environ[EXEC_ENV] = repr(at)
        return call(*args, **kwargs)

    setattr(owner, name, recorded)


def site_dir(directory: Path) -> Path:
    """Write the ``sitecustomize.py`` that runs ``install`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(
        "# Written by bench/process_timers.py: P6 timings (a no-op unless $"
        f"{ENV} is set).\n"
        "import bench.process_timers\n\nbench.process_timers.install()\n"
    )
    return directory


def read_calls(path: Path) -> list[timers.Call]:
    if not path.exists():
        return []
    return [timers.Call(**json.loads(line)) for line in path.read_text().splitlines() if line]
