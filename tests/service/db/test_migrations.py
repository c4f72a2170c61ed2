"""The schema comes from Alembic migrations, and the app refuses an out-of-date one."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from dualtune.service.api.app import create_app
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import current_revision, head_revision, upgrade
from dualtune.service.db.rows import Base
from dualtune.service.errors import SchemaOutOfDate
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings


def test_the_app_refuses_a_database_without_the_schema_and_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SchemaOutOfDate, match="Run `dualtune db upgrade`"):
        create_app(settings, FakeLauncher(), reconcile=False)


def test_the_app_refuses_an_older_revision(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine)
    with engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(SchemaOutOfDate, match="is at revision 0000"):
        create_app(Settings(data_dir=tmp_path), FakeLauncher(), engine=engine, reconcile=False)


def test_upgrade_is_idempotent_and_builds_every_table_of_the_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_the_migrations_match_the_rows(engine: Engine) -> None:
    """Run on SQLite and Postgres: no difference between the migrated schema and the rows."""
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == []
