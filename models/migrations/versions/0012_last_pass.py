"""mailbox_status: the duration and size of the daemon's last pass that fetched mail

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_status") as batch:
        batch.add_column(sa.Column("last_pass_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_pass_messages", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_status") as batch:
        batch.drop_column("last_pass_messages")
        batch.drop_column("last_pass_seconds")
