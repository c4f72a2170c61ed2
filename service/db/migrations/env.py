"""Alembic environment: the connection comes from ``dualtune.service.db.migrate`` (never a
URL in an ini file), so ``dualtune db upgrade`` and the tests migrate exactly the database
they name. Every step records itself in the schema lineage (``lineage.record_step``)."""

from __future__ import annotations

from alembic import context

from dualtune.service.db.migrations.lineage import LINEAGE_METADATA, record_step
from dualtune.service.db.rows import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through dualtune.service.db.migrate (dualtune db upgrade)")
context.configure(
    connection=connection,
    target_metadata=[Base.metadata, LINEAGE_METADATA],
    render_as_batch=connection.dialect.name == "sqlite",
    on_version_apply=record_step,
)
with context.begin_transaction():
    context.run_migrations()
