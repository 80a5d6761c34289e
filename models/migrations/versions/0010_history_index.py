"""history index: the skipped mail (history_messages, history_addresses, history_participants), the
relink_requests queue, and bounces (activities.bounce, contact_emails.bounced_at)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activities") as batch_op:
        batch_op.add_column(sa.Column("bounce", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("contact_emails") as batch_op:
        batch_op.add_column(sa.Column("bounced_at", models.types.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "history_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history_addresses")),
        sa.UniqueConstraint("address", name=op.f("uq_history_addresses_address")),
    )
    op.create_index(op.f("ix_history_addresses_domain"), "history_addresses", ["domain"], unique=False)
    op.create_table(
        "history_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("content_key", sa.String(length=1000), nullable=True),
        sa.Column("sent_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["folder_sync_state.id"],
            name=op.f("fk_history_messages_folder_id_folder_sync_state"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_history_messages")),
        sa.UniqueConstraint(
            "folder_id", "uidvalidity", "uid", name=op.f("uq_history_messages_folder_id_uidvalidity_uid")
        ),
    )
    op.create_index(op.f("ix_history_messages_sent_at"), "history_messages", ["sent_at"], unique=False)
    op.create_table(
        "history_participants",
        sa.Column("address_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["address_id"],
            ["history_addresses.id"],
            name=op.f("fk_history_participants_address_id_history_addresses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["history_messages.id"],
            name=op.f("fk_history_participants_message_id_history_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("address_id", "message_id", name=op.f("pk_history_participants")),
    )
    op.create_index(
        "ix_history_participants_message_id", "history_participants", ["message_id"], unique=False
    )
    op.create_table(
        "relink_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("domain", sa.String(length=253), nullable=True),
        sa.Column("requested_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relink_requests")),
    )


def downgrade() -> None:
    op.drop_table("relink_requests")
    op.drop_index("ix_history_participants_message_id", table_name="history_participants")
    op.drop_table("history_participants")
    op.drop_index(op.f("ix_history_messages_sent_at"), table_name="history_messages")
    op.drop_table("history_messages")
    op.drop_index(op.f("ix_history_addresses_domain"), table_name="history_addresses")
    op.drop_table("history_addresses")
    with op.batch_alter_table("contact_emails") as batch_op:
        batch_op.drop_column("bounced_at")
    with op.batch_alter_table("activities") as batch_op:
        batch_op.drop_column("bounce")
