"""A scratch Postgres database per test (created, then dropped with its connections)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

SERVER = os.environ.get("DUALTUNE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """``CREATE DATABASE campaign_<random>``; its URL; dropped (connections and all) after."""
    admin = create_engine(_psycopg(SERVER), isolation_level="AUTOCOMMIT")
    name = f"campaign_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
