"""daemons: one row per daemon process (heartbeat, lease connection's backend)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daemons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("backend_pid", sa.Integer(), nullable=True),
        sa.Column("mailboxes_held", sa.Integer(), nullable=False),
        sa.Column("jobs_held", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daemons")),
    )


def downgrade() -> None:
    op.drop_table("daemons")
