"""Alembic environment: the connection comes from ``service.db.migrate`` (never a URL in an
ini file), so ``dualtune db upgrade`` and the tests migrate exactly the database they name."""

from __future__ import annotations

from alembic import context

from dualtune.service.db.rows import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through service.db.migrate (dualtune db upgrade)")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
