"""The schema's lineage in the database: each applied revision and its parent.

Code knows only the revisions in its own script directory, so code at head ``H`` cannot tell
a database at an unknown revision ``R`` made by the next release (whose schema still serves
``H``: migrations only expand) from one made by a release far ahead. The lineage table tells
it: ``R``'s recorded parent is ``H`` exactly when the database is one revision ahead. That is
what keeps old replicas ready through ``helm upgrade`` and lets ``helm rollback`` start.

Rows are written by ``record_step``, the migration environment's ``on_version_apply``
callback, so no revision file can forget its row. Revision 0002 creates the table; the
steps before it have no table to write to and are skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Column, Connection, MetaData, String, Table, inspect, select

LINEAGE_METADATA = MetaData()
LINEAGE = Table(
    "schema_lineage",
    LINEAGE_METADATA,
    Column("revision", String(32), primary_key=True),
    Column("down_revision", String(32), nullable=True),
)


def _has_table(connection: Connection) -> bool:
    return inspect(connection).has_table(LINEAGE.name)


def record_step(
    ctx: MigrationContext,
    step: MigrationInfo,
    heads: Collection[Any],
    run_args: Mapping[str, Any],
) -> None:
    """Alembic's ``on_version_apply`` (called with these keywords): an upgrade records its
    revision and parent, a downgrade forgets the revision it removes."""
    del heads, run_args
    if not step.is_migration:
        return
    connection = ctx.connection
    assert connection is not None, "migrations run online (dualtune.service.db.migrate)"
    if not _has_table(connection):  # before 0002, or 0002's own downgrade dropped it
        return
    revision = step.up_revision_id
    connection.execute(LINEAGE.delete().where(LINEAGE.c.revision == revision))
    if step.is_upgrade:
        # A merge revision (none so far) would record its parents as "a,b": never a head.
        parent = ",".join(step.down_revision_ids) or None
        connection.execute(LINEAGE.insert().values(revision=revision, down_revision=parent))


def recorded_parent(connection: Connection, revision: str) -> str | None:
    """The parent the database recorded for ``revision`` (None: not recorded)."""
    if not _has_table(connection):
        return None
    return connection.execute(
        select(LINEAGE.c.down_revision).where(LINEAGE.c.revision == revision)
    ).scalar_one_or_none()
