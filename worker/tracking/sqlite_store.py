"""MLflow's SQLite store in write-ahead-log mode.

In its default rollback-journal mode a SQLite writer locks every reader out until it
commits, and MLflow's store commits several times per ``log_batch``: the units of a sweep
write the same file from several processes while the driver searches it and the MLflow UI
reads it. In WAL mode readers go on beside the one writer. The mode is a property of the
database file and stays with it (the ``-wal`` and ``-shm`` files beside it are part of the
store while it is open); it needs a local file system, as SQLite does anyway. Measured on
this machine, it does not change the CPU time of MLflow's logging (ORM work, not syncing).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

_lock = threading.Lock()
_done: set[str] = set()


def sqlite_file(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking URI (resolved), else ``None``."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    path = unquote(urlsplit(tracking_uri).path)
    if tracking_uri.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    elif tracking_uri.startswith("sqlite:///"):
        path = path[1:]  # sqlite:///relative.db
    if not path or path == ":memory:":
        return None
    return str(Path(path).resolve())


def use_wal(tracking_uri: str) -> None:
    """Put the SQLite store of ``tracking_uri`` in WAL mode (once per process); a store that
    is not SQLite, or a file that cannot be switched now (another process in the middle of
    a write), is left as it is."""
    path = sqlite_file(tracking_uri)
    if path is None:
        return
    with _lock:
        if path in _done:
            return
        _done.add(path)
    with (
        contextlib.suppress(sqlite3.Error, OSError),
        contextlib.closing(sqlite3.connect(path, timeout=5.0)) as connection,
    ):
        connection.execute("PRAGMA journal_mode=WAL")
