"""default pipeline: Sales with Qualified, Demo, Proposal, Negotiation, Won, Lost

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGES = [
    ("Qualified", 10, "open"),
    ("Demo", 25, "open"),
    ("Proposal", 50, "open"),
    ("Negotiation", 75, "open"),
    ("Won", 100, "won"),
    ("Lost", 0, "lost"),
]


def upgrade() -> None:
    connection = op.get_bind()
    if connection.execute(sa.text("SELECT COUNT(*) FROM pipelines")).scalar_one():
        return
    now = datetime.now(UTC)
    stored_now = now.replace(tzinfo=None) if connection.dialect.name == "sqlite" else now
    pipelines = sa.table(
        "pipelines",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("position", sa.Integer),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    stages = sa.table(
        "stages",
        sa.column("pipeline_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("position", sa.Integer),
        sa.column("probability", sa.Integer),
        sa.column("stall_days", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("alerts_excluded", sa.Boolean),
    )
    result = connection.execute(
        pipelines.insert().values(name="Sales", position=0, created_at=stored_now).returning(pipelines.c.id)
    )
    pipeline_id = result.scalar_one()
    op.bulk_insert(
        stages,
        [
            {
                "pipeline_id": pipeline_id,
                "name": name,
                "position": position,
                "probability": probability,
                "stall_days": None,
                "kind": kind,
                "alerts_excluded": False,
            }
            for position, (name, probability, kind) in enumerate(STAGES)
        ],
    )


def downgrade() -> None:
    connection = op.get_bind()
    pipeline_id = connection.execute(sa.text("SELECT id FROM pipelines WHERE name = 'Sales'")).scalar()
    if pipeline_id is None:
        return
    in_use = connection.execute(
        sa.text("SELECT COUNT(*) FROM deals WHERE pipeline_id = :p"), {"p": pipeline_id}
    ).scalar_one()
    if not in_use:
        connection.execute(sa.text("DELETE FROM stages WHERE pipeline_id = :p"), {"p": pipeline_id})
        connection.execute(sa.text("DELETE FROM pipelines WHERE id = :p"), {"p": pipeline_id})
