"""How a driver process ends: at once, once everything it owes is written.

A driver's work is saved before it exits (Tune's experiment state on disk, every MLflow
write done, the report printed), so nothing is left for Python's own shutdown, which on a
driver takes seconds: Ray's ``atexit`` shutdown of a local runtime (its GCS, raylet and
workers stopped one by one), Tune's and MLflow's threads joined, torch's modules torn down.
``exit_process`` skips it:

* a Ray runtime this process joined (the embedded stack's head, a cluster) is left
  gracefully (``ray.shutdown``, within ``RAY_SHUTDOWN_S``): it ends this job's workers;
* what is left of this process's children (a local runtime's GCS, raylet and workers, whose
  state nobody reads again) is SIGKILLed;
* logs and the standard streams are flushed, and the process exits with ``os._exit``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

import psutil

log = logging.getLogger("dualtune.worker.process_exit")
RAY_SHUTDOWN_S = 5.0
"""How long leaving a joined runtime may take (seen: 12 s for a local runtime on a busy
machine) before the process exits anyway."""


def _leave_ray() -> None:
    import ray

    from dualtune.worker.ray_runtime import started_here

    if ray.is_initialized() and not started_here():
        with contextlib.suppress(Exception):  # the process exits next, whatever Ray says
            ray.shutdown()


def kill_children() -> None:
    """SIGKILL every descendant of this process and wait for them (5 s at most)."""
    with contextlib.suppress(psutil.Error):
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=5)


def exit_process(status: int) -> NoReturn:
    """Leave a joined Ray runtime, kill this process's children, flush and exit with
    ``status`` now, without the interpreter's shutdown (see the module's docstring)."""
    if "ray" in sys.modules:
        stopper = threading.Thread(target=_leave_ray, name="dualtune-ray-leave", daemon=True)
        stopper.start()
        stopper.join(RAY_SHUTDOWN_S)
    kill_children()
    log.info("exiting with status %d", status)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
