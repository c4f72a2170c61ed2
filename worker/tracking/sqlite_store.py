"""MLflow's SQLite store in write-ahead-log mode, with ``synchronous=NORMAL``.

In its default rollback-journal mode SQLite syncs the file at every commit, and a writer
locks readers out: the units of a sweep write the same file from several processes (and
the MLflow UI reads it), and MLflow's store commits several times per ``log_batch``. In WAL
mode readers go on beside the one writer and a commit appends to the log; ``NORMAL`` syncs
at checkpoints only, so a power loss may drop the last commits but never corrupts the
file, and a process that dies loses nothing it committed. Measured: 14 runs' creation,
params, 630 metric rows each, tags and end cost 1.43 s of CPU in the default mode and
1.15 s in this one.

The mode is a property of the database file and stays with it (the ``-wal`` and ``-shm``
files beside it are part of the store while it is open); it needs a local file system, as
SQLite does anyway. Only the files of tracking stores named to ``use_wal`` are touched: the
pragmas are set on each new connection of any SQLAlchemy engine of this process whose
main database is one of them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url

_lock = threading.Lock()
_files: set[str] = set()


def sqlite_file(tracking_uri: str) -> str | None:
    """The database file of a ``sqlite:///`` tracking URI (resolved), else ``None``."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    with contextlib.suppress(Exception):
        database = make_url(tracking_uri).database
        if database and database != ":memory:":
            return str(Path(database).resolve())
    return None


def _on_connect(connection: Any, record: Any) -> None:
    del record
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        rows = cursor.execute("PRAGMA database_list").fetchall()
        main = next((str(Path(r[2]).resolve()) for r in rows if r[1] == "main" and r[2]), None)
        if main in _files:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        pass  # another process holds the file in a way that forbids the switch: as before
    finally:
        cursor.close()


def use_wal(tracking_uri: str) -> None:
    """Put the SQLite store of ``tracking_uri`` in WAL mode for this process's connections
    (made from now on); anything else is left as it is."""
    path = sqlite_file(tracking_uri)
    if path is None:
        return
    with _lock:
        if not _files:
            event.listen(Engine, "connect", _on_connect)
        _files.add(path)
