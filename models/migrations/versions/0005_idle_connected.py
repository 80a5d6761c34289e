"""mailbox_status: which daemon's IDLE is connected, and since when

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_status") as batch:
        batch.add_column(sa.Column("idle_daemon_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("idle_since", models.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_status") as batch:
        batch.drop_column("idle_since")
        batch.drop_column("idle_daemon_id")
