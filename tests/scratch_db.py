"""Databases of a test's own: a scratch Postgres database (created on the server at
127.0.0.1:5432, dropped with its connections after), or a SQLite file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PG_SERVER = os.environ.get("DUALTUNE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """``CREATE DATABASE <prefix>_<random>``; its URL; dropped (connections and all) after."""
    admin = create_engine(
        PG_SERVER.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - CI starts Postgres (.ci/run)
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_SERVER} is needed for the postgres tests: {exc}")
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def empty_database(kind: str, tmp: Path, prefix: str) -> Iterator[str]:
    """The URL of a database without any schema: ``sqlite`` (a file in ``tmp``) or
    ``postgres`` (a scratch database)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'dualtune.db'}"
        return
    with scratch_postgres(prefix) as url:
        yield url
