"""planned activities (a type, an optional time, a company) and the indexes of the search everywhere

Tasks become planned activities: `kind` (call, meeting, email, todo; existing tasks are to-dos),
`has_due_time` (existing tasks had a time), `company_id`, and two indexes for my day and a deal's next step.

Search (models.search): on SQLite, FTS5 tables with the trigram tokenizer, kept by triggers, so a substring
is found through an index whatever writes the rows; on PostgreSQL, pg_trgm GIN indexes when the extension
can be created (else the search scans, slower but right). Neither is part of the ORM metadata:
models.search.SEARCH_OBJECTS names them for the schema comparison.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (FTS table, source table, rowid expression, record id expression, text expression, columns that matter)
SQLITE_SOURCES = (
    ("contact_search", "contacts", "{r}.id * 2", "{r}.id",
     "coalesce({r}.name, '') || ' ' || coalesce({r}.phone, '')", "name, phone"),
    ("contact_search", "contact_emails", "{r}.id * 2 + 1", "{r}.contact_id", "{r}.email",
     "email, contact_id"),
    ("company_search", "companies", "{r}.id * 2", "{r}.id", "coalesce({r}.name, '')", "name"),
    ("company_search", "company_domains", "{r}.id * 2 + 1", "{r}.company_id", "{r}.domain",
     "domain, company_id"),
    ("deal_search", "deals", "{r}.id", "{r}.id", "coalesce({r}.title, '')", "title"),
)  # fmt: skip

PG_TRIGRAM_INDEXES = (
    ("ix_contacts_name_trgm", "contacts", "name"),
    ("ix_contacts_phone_trgm", "contacts", "phone"),
    ("ix_contact_emails_email_trgm", "contact_emails", "email"),
    ("ix_companies_name_trgm", "companies", "name"),
    ("ix_company_domains_domain_trgm", "company_domains", "domain"),
    ("ix_deals_title_trgm", "deals", "title"),
)


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="todo", nullable=False))
        batch_op.add_column(sa.Column("has_due_time", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column("company_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_tasks_company_id_companies"),
            "companies",
            ["company_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_tasks_company_id"), ["company_id"], unique=False)
        batch_op.create_index(
            "ix_tasks_assignee_id_done_at_due_at", ["assignee_id", "done_at", "due_at"], unique=False
        )
        batch_op.create_index(
            "ix_tasks_deal_id_done_at_due_at", ["deal_id", "done_at", "due_at"], unique=False
        )

    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_search_up()
    elif bind.dialect.name == "postgresql":
        _postgresql_search_up()


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for fts in ("contact_search", "company_search", "deal_search"):
            op.execute(f"DROP TABLE IF EXISTS {fts}")
        for _fts, source, *_rest in SQLITE_SOURCES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {source}_search_{event}")
    elif bind.dialect.name == "postgresql":
        for name, _table, _column in PG_TRIGRAM_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_deal_id_done_at_due_at")
        batch_op.drop_index("ix_tasks_assignee_id_done_at_due_at")
        batch_op.drop_index(batch_op.f("ix_tasks_company_id"))
        batch_op.drop_constraint(batch_op.f("fk_tasks_company_id_companies"), type_="foreignkey")
        batch_op.drop_column("company_id")
        batch_op.drop_column("has_due_time")
        batch_op.drop_column("kind")


def _sqlite_search_up() -> None:
    bind = op.get_bind()
    try:
        bind.exec_driver_sql(
            "CREATE VIRTUAL TABLE temp.threadline_fts_probe USING fts5(x, tokenize='trigram')"
        )
        bind.exec_driver_sql("DROP TABLE temp.threadline_fts_probe")
    except sa.exc.OperationalError:
        return  # an SQLite without FTS5 or the trigram tokenizer (before 3.34): the search scans instead
    for fts in ("contact_search", "company_search", "deal_search"):
        op.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5(record_id UNINDEXED, body, tokenize='trigram')")
    for fts, source, rowid, record, body, columns in SQLITE_SOURCES:

        def values(row: str, rowid: str = rowid, record: str = record, body: str = body) -> str:
            return f"{rowid.format(r=row)}, {record.format(r=row)}, {body.format(r=row)}"

        insert = f"INSERT INTO {fts}(rowid, record_id, body) VALUES ({values('new')});"
        delete = f"DELETE FROM {fts} WHERE rowid = {rowid.format(r='old')};"
        op.execute(f"CREATE TRIGGER {source}_search_insert AFTER INSERT ON {source} BEGIN {insert} END")
        op.execute(
            f"CREATE TRIGGER {source}_search_update AFTER UPDATE OF {columns} ON {source} "
            f"BEGIN {delete} {insert} END"
        )
        op.execute(f"CREATE TRIGGER {source}_search_delete AFTER DELETE ON {source} BEGIN {delete} END")
        op.execute(f"INSERT INTO {fts}(rowid, record_id, body) SELECT {values(source)} FROM {source}")


def _postgresql_search_up() -> None:
    bind = op.get_bind()
    available = bind.exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'").scalar()
    if not available:
        return
    savepoint = bind.begin_nested()
    try:
        bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        savepoint.commit()
    except sa.exc.DBAPIError:
        savepoint.rollback()  # no right to create it: the search scans instead
        return
    for name, table, column in PG_TRIGRAM_INDEXES:
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ({column} gin_trgm_ops)")
