"""Engines and sessions: the one place that knows how Threadline talks to SQLite and PostgreSQL.

Besides making engines and transactions, it owns the few statements whose SQL differs between the two
databases (reserving ids for a bulk insert, INSERT ... ON CONFLICT) and the size of IN lists: every lookup
by a list of values goes through `chunked`, so no statement's bound variables grow with its input (SQLite
allows 32,766 per statement in the builds most users have, fewer in old ones; psycopg 65,535).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

# Values per IN list: far below every limit above, and big enough that lookups stay a handful of statements.
LOOKUP_CHUNK = 500


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine with the settings Threadline relies on (foreign keys and WAL on SQLite)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINTs; SQLAlchemy emits BEGIN itself
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # A writer takes the lock up front (IMMEDIATE) so two writers queue on busy_timeout instead of one
    # failing mid-transaction when it upgrades from reading; readers begin deferred and never wait (WAL).
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that write the webhook outbox with every change worth an event (models.webhooks)."""
    from models.webhooks import watch_sessions  # it imports this module

    factory = sessionmaker(bind=engine, expire_on_commit=False)
    watch_sessions(factory)
    return factory


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a sessionmaker is bound to (for work outside a session: locks, schema checks)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the sessionmaker must be bound to an Engine")
    return bind


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool = True) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on any error."""
    with factory() as session, session.begin():
        if write and session.get_bind().dialect.name == "sqlite":
            session.connection(execution_options={"sqlite_immediate": True})
        yield session


def chunked(values: Sequence[T], size: int = LOOKUP_CHUNK) -> Iterator[Sequence[T]]:
    """Values in pieces of at most `size`, for IN lists (see the module docstring)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def reserve_ids(session: Session, table: Table, count: int) -> list[int]:
    """Ids for rows about to be inserted with one statement, so related rows can be inserted with them (a
    multi-row INSERT's RETURNING promises no order, and SQLAlchemy's way of keeping it on SQLite is one
    INSERT per row).

    PostgreSQL: taken from the table's sequence, like any insert would. SQLite: the ids after the largest,
    which are free because a writing transaction holds the database's write lock (BEGIN IMMEDIATE).
    """
    if count <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.scalars(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"),
            {"table": table.name, "count": count},
        )
        return sorted(int(i) for i in rows)
    largest = int(session.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0)
    return list(range(largest + 1, largest + 1 + count))


def dialect_insert(session: Session) -> Any:
    """The INSERT construct of the session's database, which has on_conflict_do_nothing/do_update."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
