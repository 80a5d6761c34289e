"""folder_sync_state: how many messages the last poll found above the folder's cursor ("messages waiting")

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("folder_sync_state") as batch:
        batch.add_column(sa.Column("messages_waiting", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("folder_sync_state") as batch:
        batch.drop_column("messages_waiting")
