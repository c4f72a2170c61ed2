"""The process's tracking threads: one sends to MLflow, one writes files (parquet tables,
figures). Training only hands them work.

One sender per process, not MLflow's asynchronous logging (``log_batch(...,
synchronous=False)``): MLflow's queue merges and sends batches without retrying, and a
failed batch does not hold back the ones after it, so retrying it would log out of order;
the trial loggers need a failed operation to stay at the head of their queue until it is
sent (``TrialRunLogger``). One thread also keeps a SQLite store's writes from contending
with each other.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

SENDER = "dualtune-mlflow-send"
WRITER = "dualtune-mlflow-files"

_lock = threading.Lock()
_executors: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def serial_executor(name: str) -> ThreadPoolExecutor:
    """The process's one-thread executor called ``name``: work submitted to it runs in
    submission order. Started on first use, and again in a forked child (threads do not
    survive a fork)."""
    with _lock:
        found = _executors.get(name)
        if found is not None and found[0] == os.getpid():
            return found[1]
        executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        _executors[name] = (os.getpid(), executor)
        return executor
