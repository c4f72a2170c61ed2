"""sweeps.launch_submission_id; the schema lineage table

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Expand only: code of revision 0001 runs unchanged on this schema (it never reads the new
column), so replicas of the previous release keep serving while and after this runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite adds a nullable column in place (no table copy), as Postgres does.
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("launch_submission_id", sa.String(length=120)))
    op.create_table(
        "schema_lineage",
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("down_revision", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("revision"),
    )


def downgrade() -> None:
    op.drop_table("schema_lineage")
    # Never the copy-and-move: on SQLite it drops `sweeps`, and with foreign keys on that
    # deletes every trial and idempotency key (ON DELETE CASCADE). SQLite ≥ 3.35 drops a
    # plain column in place.
    with op.batch_alter_table("sweeps", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("launch_submission_id")
