"""merged_records: a merged contact's or company's old id leads to the record it was merged into

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from models.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merged_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("merged_id", sa.Integer(), nullable=False),
        sa.Column("kept_id", sa.Integer(), nullable=False),
        sa.Column("merged_name", sa.String(length=300), nullable=False),
        sa.Column("merged_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("merged_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merged_by_id"],
            ["users.id"],
            name=op.f("fk_merged_records_merged_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merged_records")),
        sa.UniqueConstraint("kind", "merged_id", name=op.f("uq_merged_records_kind_merged_id")),
    )
    op.create_index("ix_merged_records_kind_kept_id", "merged_records", ["kind", "kept_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_merged_records_kind_kept_id", table_name="merged_records")
    op.drop_table("merged_records")
