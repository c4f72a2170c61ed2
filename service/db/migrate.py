"""Schema migrations (Alembic) and the check that this code can run on a database's schema.

Migrations are expand/contract: a revision never breaks the code of the revision before it.
So code at head ``H`` runs on a database at ``H`` and on one a single revision ahead (the
next release migrated it; its parent, recorded in the schema lineage, is ``H``). That keeps
old replicas ready during an upgrade and lets a rollback start. A database behind the code
is refused: the code's queries need what the missing revisions add.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from dualtune.service.db.migrations.lineage import recorded_parent
from dualtune.service.errors import InvalidInput, SchemaOutOfDate

MIGRATIONS = Path(__file__).with_name("migrations")


class Fit(StrEnum):
    """How a database's schema relates to this code's head revision."""

    EMPTY = "empty"
    CURRENT = "current"
    ONE_AHEAD = "one_ahead"
    BEHIND = "behind"
    TOO_FAR_AHEAD = "too_far_ahead"
    """A revision this code does not know whose parent is not this code's head."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str
    fit: Fit

    @property
    def runnable(self) -> bool:
        """Whether this code may serve on the schema."""
        return self.fit in (Fit.CURRENT, Fit.ONE_AHEAD)


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _script() -> ScriptDirectory:
    # Read once per process: readiness asks every 10 s and the files never change under it.
    return ScriptDirectory.from_config(_config())


def known_revisions() -> list[str]:
    """This code's revisions, head first."""
    return [script.revision for script in _script().walk_revisions()]


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_state(engine: Engine) -> SchemaState:
    head = head_revision()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        if current is None:
            fit = Fit.EMPTY
        elif current == head:
            fit = Fit.CURRENT
        elif current in known_revisions():
            fit = Fit.BEHIND
        elif recorded_parent(connection, current) == head:
            fit = Fit.ONE_AHEAD
        else:
            fit = Fit.TOO_FAR_AHEAD
    return SchemaState(current, head, fit)


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _too_far_ahead(engine: Engine, state: SchemaState) -> SchemaOutOfDate:
    return SchemaOutOfDate(
        f"the database {_where(engine)} is at revision {state.current}, more than one "
        f"revision ahead of this dualtune (revision {state.head}). Run a newer dualtune, or "
        f"bring the database back with the dualtune that migrated it "
        f"(`dualtune db downgrade {state.head}`)."
    )


def check_schema(engine: Engine) -> SchemaState:
    """Raise ``SchemaOutOfDate`` unless this code can run on the database's schema: at the
    code's head revision, or one revision ahead of it."""
    state = schema_state(engine)
    if state.runnable:
        return state
    if state.fit is Fit.TOO_FAR_AHEAD:
        raise _too_far_ahead(engine, state)
    where = (
        "has no dualtune schema" if state.fit is Fit.EMPTY else f"is at revision {state.current}"
    )
    raise SchemaOutOfDate(
        f"the database {_where(engine)} {where}; this dualtune needs revision {state.head}. "
        "Run `dualtune db upgrade` (with the same DUALTUNE_DATABASE_URL) and start again."
    )


LOCK_TIMEOUT_S = 10.0


def _run(engine: Engine, step: Callable[[Config], None], lock_timeout_s: float) -> None:
    """One migration in one transaction. On Postgres a DDL statement waits for its table's
    exclusive lock and every query of the running replicas queues behind it: past
    ``lock_timeout_s`` the migration gives up instead (its Job or init container retries)."""
    config = _config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            milliseconds = int(lock_timeout_s * 1000)
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{milliseconds}ms'")
        config.attributes["connection"] = connection
        step(config)


def upgrade(
    engine: Engine, revision: str = "head", *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> SchemaState:
    """Bring the schema to ``revision`` (idempotent) and return the state it was in. To
    ``head`` on a database one revision ahead it does nothing: this code runs on it, and a
    rollback's migration step must succeed."""
    state = schema_state(engine)
    if revision == "head":
        if state.fit is Fit.ONE_AHEAD:
            return state
        if state.fit is Fit.TOO_FAR_AHEAD:
            raise _too_far_ahead(engine, state)
    _run(engine, lambda config: command.upgrade(config, revision), lock_timeout_s)
    return state


def downgrade(
    engine: Engine, revision: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S
) -> SchemaState:
    """Take the schema back to ``revision``, one of this code's revisions below the
    database's, and return the state it was in."""
    known = known_revisions()
    if revision not in known:
        raise InvalidInput(
            f"revision {revision!r} is not one of this dualtune's: {', '.join(known)}",
            field="revision",
        )
    state = schema_state(engine)
    if state.fit in (Fit.ONE_AHEAD, Fit.TOO_FAR_AHEAD):
        raise SchemaOutOfDate(
            f"the database {_where(engine)} is at revision {state.current}, which this "
            f"dualtune (revision {state.head}) cannot undo: downgrade with the dualtune that "
            "migrated it."
        )
    if state.current is None:
        raise SchemaOutOfDate(f"the database {_where(engine)} has no dualtune schema")
    if known.index(revision) < known.index(state.current):
        raise InvalidInput(
            f"the database is at revision {state.current}, below {revision}: "
            "use `dualtune db upgrade` to go forward",
            field="revision",
        )
    _run(engine, lambda config: command.downgrade(config, revision), lock_timeout_s)
    return state
