"""The schema comes from Alembic migrations; this code runs on its own revision and on the
next one (expand/contract: an upgrade keeps old replicas ready, a rollback can start), and
refuses a database behind it or further ahead, saying what to run."""

from __future__ import annotations

import itertools
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from dualtune.service.api.app import create_app
from dualtune.service.cli import app as cli
from dualtune.service.db.engine import make_engine
from dualtune.service.db.migrate import (
    MIGRATIONS,
    Fit,
    current_revision,
    downgrade,
    head_revision,
    known_revisions,
    schema_state,
    upgrade,
)
from dualtune.service.db.migrations.lineage import LINEAGE, LINEAGE_METADATA
from dualtune.service.db.rows import Base
from dualtune.service.errors import InvalidInput, SchemaOutOfDate
from dualtune.service.launchers import FakeLauncher
from dualtune.service.settings import Settings
from tests.scratch_db import empty_database, scratch_postgres

PREVIOUS = known_revisions()[1]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, without any schema."""
    with empty_database(request.param, tmp_path, "dualtune_mig") as url:
        yield url


@pytest.fixture
def empty(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def settings_for(tmp_path: Path, url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, launcher="fake", testing=True)


def newer_release(tmp_path: Path, *revisions: str) -> Config:
    """The script directory of releases after this one: this code's revisions, then each
    of ``revisions`` in turn, each adding a nullable column (expand only)."""
    folder = tmp_path / "newer-migrations"
    shutil.copytree(MIGRATIONS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    parent = head_revision()
    for revision in revisions:
        (folder / "versions" / f"{revision}_newer.py").write_text(
            textwrap.dedent(
                f"""
                import sqlalchemy as sa
                from alembic import op

                revision = {revision!r}
                down_revision = {parent!r}
                branch_labels = None
                depends_on = None


                def upgrade():
                    op.add_column("sweeps", sa.Column("note_{revision}", sa.Text()))


                def downgrade():
                    with op.batch_alter_table("sweeps", recreate="never") as batch_op:
                        batch_op.drop_column("note_{revision}")
                """
            )
        )
        parent = revision
    config = Config()
    config.set_main_option("script_location", str(folder))
    return config


def migrate_with(config: Config, engine: Engine, revision: str, *, down: bool = False) -> None:
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def seed_a_sweep(engine: Engine) -> None:
    """A tenant, a sweep and two trials, written as the code of revision 0001 writes them."""
    now = "2026-12-01 00:00:00"
    with engine.begin() as c:
        c.execute(text("INSERT INTO tenants (name, created_at) VALUES ('alice', :t)"), {"t": now})
        c.execute(
            text(
                "INSERT INTO sweeps (id, tenant_pk, name, spec, status, generation, "
                "launch_count, launch_failures, created_at, updated_at) "
                "VALUES ('sw1', 1, 'n', '{}', 'running', 0, 1, 0, :t, :t)"
            ),
            {"t": now},
        )
        for i in range(2):
            c.execute(
                text(
                    "INSERT INTO trials (sweep_pk, trial_id, position, method, params, status, "
                    "generation, attempts, prior_attempts, metrics, updated_at) "
                    "VALUES (1, :id, :i, 'erm', '{}', 'pending', 0, 0, 0, '{}', :t)"
                ),
                {"id": f"t{i}", "i": i, "t": now},
            )


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as c:
        sweeps = c.execute(text("SELECT count(*) FROM sweeps")).scalar_one()
        trials = c.execute(text("SELECT count(*) FROM trials")).scalar_one()
    return sweeps, trials


def test_the_app_refuses_a_database_without_the_schema_and_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, launcher="fake", testing=True)
    with pytest.raises(SchemaOutOfDate, match="Run `dualtune db upgrade`"):
        create_app(settings, FakeLauncher(), reconcile=False)


def test_the_app_refuses_a_database_behind_it(tmp_path: Path, empty: Engine) -> None:
    upgrade(empty, PREVIOUS)

    with pytest.raises(SchemaOutOfDate) as refused:
        create_app(settings_for(tmp_path, ""), FakeLauncher(), engine=empty, reconcile=False)

    assert f"is at revision {PREVIOUS}; this dualtune needs revision {head_revision()}" in (
        refused.value.message
    )
    assert "Run `dualtune db upgrade`" in refused.value.message


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
    """Run on SQLite and Postgres: no difference between the migrated schema and the rows
    (plus the lineage table, which only the migrations write)."""
    with engine.connect() as c:
        context = MigrationContext.configure(c)
        diff = compare_metadata(context, [Base.metadata, LINEAGE_METADATA])  # type: ignore[arg-type]
    assert diff == []


def test_every_revision_records_its_parent_and_a_downgrade_forgets_it(empty: Engine) -> None:
    upgrade(empty)
    with empty.connect() as c:
        recorded = dict(c.execute(LINEAGE.select()).all())
    revisions = known_revisions()  # head first, 0001 last: every one but 0001 has a parent
    assert recorded == dict(itertools.pairwise(revisions))

    if head_revision() != "0002":  # from 0003 on, a downgrade by one keeps the table
        downgrade(empty, PREVIOUS)
        with empty.connect() as c:
            assert head_revision() not in dict(c.execute(LINEAGE.select()).all())


def test_this_code_runs_on_the_next_release_s_schema(tmp_path: Path, empty: Engine) -> None:
    upgrade(empty)
    seed_a_sweep(empty)
    migrate_with(newer_release(tmp_path, "next1"), empty, "next1")

    assert schema_state(empty).fit is Fit.ONE_AHEAD
    app = create_app(settings_for(tmp_path, ""), FakeLauncher(), engine=empty, reconcile=False)
    with TestClient(app) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "schema_revision": "next1",
        "code_revision": head_revision(),
    }
    # A rollback's migration step (`dualtune db upgrade` of this code) passes, doing nothing.
    assert upgrade(empty).fit is Fit.ONE_AHEAD
    assert current_revision(empty) == "next1"
    assert counts(empty) == (1, 2)


def test_db_upgrade_on_the_next_release_s_schema_exits_0_and_does_nothing(
    tmp_path: Path, empty_url: str, empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(empty)
    migrate_with(newer_release(tmp_path, "next1"), empty, "next1")
    monkeypatch.setenv("DUALTUNE_DATABASE_URL", empty_url)

    result = CliRunner().invoke(cli, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert f"one ahead of this dualtune's {head_revision()}" in result.output
    assert "nothing to do" in result.output
    assert current_revision(empty) == "next1"


def test_this_code_refuses_a_schema_two_releases_ahead(tmp_path: Path, empty: Engine) -> None:
    upgrade(empty)
    migrate_with(newer_release(tmp_path, "next1", "next2"), empty, "next2")

    with pytest.raises(SchemaOutOfDate) as refused:
        create_app(settings_for(tmp_path, ""), FakeLauncher(), engine=empty, reconcile=False)
    assert "is at revision next2, more than one revision ahead" in refused.value.message
    assert f"`dualtune db downgrade {head_revision()}`" in refused.value.message
    with pytest.raises(SchemaOutOfDate, match="more than one revision ahead"):
        upgrade(empty)
    assert current_revision(empty) == "next2"


def test_readiness_turns_503_when_the_schema_falls_behind_the_running_code(
    tmp_path: Path, empty: Engine
) -> None:
    upgrade(empty)
    app = create_app(settings_for(tmp_path, ""), FakeLauncher(), engine=empty, reconcile=False)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        downgrade(empty, PREVIOUS)
        refused = client.get("/readyz")
    assert refused.status_code == 503
    assert f"is at revision {PREVIOUS}" in refused.json()["detail"]
    assert "Run `dualtune db upgrade`" in refused.json()["detail"]


def test_a_downgrade_to_the_previous_revision_keeps_every_sweep_and_trial(
    empty: Engine,
) -> None:
    """On SQLite a table copy would drop `sweeps` and cascade to every trial."""
    upgrade(empty, PREVIOUS)
    seed_a_sweep(empty)
    upgrade(empty)

    assert downgrade(empty, PREVIOUS).fit is Fit.CURRENT
    assert current_revision(empty) == PREVIOUS
    assert counts(empty) == (1, 2)
    upgrade(empty)
    assert counts(empty) == (1, 2)
    assert current_revision(empty) == head_revision()


def test_db_downgrade_command(
    empty_url: str, empty: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(empty)
    monkeypatch.setenv("DUALTUNE_DATABASE_URL", empty_url)

    done = CliRunner().invoke(cli, ["db", "downgrade", PREVIOUS])
    again = CliRunner().invoke(cli, ["db", "downgrade", "nope"])

    assert done.exit_code == 0, done.output
    assert f"database at revision {PREVIOUS} (was {head_revision()})" in done.output
    assert current_revision(empty) == PREVIOUS
    assert again.exit_code == 1
    assert "revision 'nope' is not one of this dualtune's" in again.output


def test_downgrade_refuses_what_this_code_cannot_undo(tmp_path: Path, empty: Engine) -> None:
    with pytest.raises(SchemaOutOfDate, match="has no dualtune schema"):
        downgrade(empty, PREVIOUS)
    upgrade(empty, PREVIOUS)
    with pytest.raises(InvalidInput, match="use `dualtune db upgrade` to go forward"):
        downgrade(empty, head_revision())
    upgrade(empty)
    migrate_with(newer_release(tmp_path, "next1"), empty, "next1")
    with pytest.raises(SchemaOutOfDate, match="downgrade with the dualtune that migrated it"):
        downgrade(empty, PREVIOUS)
    # The newer release itself takes the database back to this code's revision.
    migrate_with(newer_release(tmp_path / "again", "next1"), empty, head_revision(), down=True)
    assert schema_state(empty).fit is Fit.CURRENT


@pytest.mark.postgres
def test_on_postgres_a_migration_gives_up_on_a_busy_table_instead_of_stalling_the_api() -> None:
    """A DDL statement queued for a table's lock makes every query of the running replicas
    queue behind it; past the lock timeout the migration fails (its Job retries) and the
    replicas never noticed."""
    with scratch_postgres("dualtune_mig") as url:
        engine = make_engine(url)
        try:
            upgrade(engine, PREVIOUS)
            with engine.connect() as replica:
                replica.execute(text("SELECT count(*) FROM sweeps"))  # holds its share lock
                with pytest.raises(OperationalError, match="lock timeout"):
                    upgrade(engine, lock_timeout_s=0.5)
                replica.rollback()
            assert current_revision(engine) == PREVIOUS
            upgrade(engine, lock_timeout_s=0.5)
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
