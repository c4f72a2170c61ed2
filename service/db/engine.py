"""Engines for the service's database: SQLite in WAL mode (embedded) or Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def normalized_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we install)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalized_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url,
            # Requests run in a thread pool; SQLite connections may move between threads.
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(connection: Any, record: Any) -> None:
    del record
    cursor = connection.cursor()
    # WAL lets readers run beside the one writer; the busy timeout queues writers instead of
    # failing them with "database is locked". FULL: an acknowledged sweep survives a power
    # cut too, not only a crash of the process (NORMAL would risk the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
