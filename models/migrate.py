"""Schema migrations (Alembic), run from code so `threadline db upgrade` needs no alembic.ini."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from models.schema import Base
from models.search import is_search_object

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def _run(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return _scripts().head


@dataclass(frozen=True)
class _Scripts:
    head: str | None
    known: frozenset[str]


@functools.cache
def _scripts() -> _Scripts:
    # The migrations shipped with this version never change while it runs; reading them costs tens of
    # milliseconds, too much for a readiness probe asked every few seconds.
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(config)
    return _Scripts(scripts.get_current_head(), frozenset(s.revision for s in scripts.walk_revisions()))


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)


def known_revisions(engine: Engine) -> frozenset[str]:
    """Every revision this version's migrations know (a database at another one is from a newer version)."""
    return _scripts().known


class SchemaState(enum.StrEnum):
    CURRENT = "current"
    UNREACHABLE = "unreachable"
    EMPTY = "empty"
    BEHIND = "behind"  # an older schema: `threadline db upgrade` brings it up to date
    UNKNOWN = "unknown"  # a revision this version does not know: a newer Threadline migrated it


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    current: str | None
    head: str | None
    detail: str = ""  # why the database is unreachable

    @property
    def problem(self) -> str | None:
        """None when this version can work on the database; else one line saying what is wrong."""
        match self.state:
            case SchemaState.CURRENT:
                return None
            case SchemaState.UNREACHABLE:
                return f"database unreachable: {self.detail}"
            case SchemaState.EMPTY:
                return "database is empty: run `threadline db upgrade`"
            case SchemaState.UNKNOWN:
                return (
                    f"database is at revision {self.current}, unknown to this version "
                    "(a newer Threadline migrated it)"
                )
        return (
            f"database is at revision {self.current}, this version needs {self.head}: "
            "run `threadline db upgrade`"
        )


def schema_status(engine: Engine) -> SchemaStatus:
    """Can this version work on that database? The one answer for readiness checks, status and restores."""
    head = head_revision(engine)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        text = str(getattr(exc, "orig", None) or exc).strip()
        detail = text.splitlines()[0] if text else type(exc).__name__
        return SchemaStatus(SchemaState.UNREACHABLE, None, head, detail)
    if current == head:
        state = SchemaState.CURRENT
    elif current is None:
        state = SchemaState.EMPTY
    elif current not in known_revisions(engine):
        state = SchemaState.UNKNOWN
    else:
        state = SchemaState.BEHIND
    return SchemaStatus(state, current, head)


def schema_differences(engine: Engine) -> list[object]:
    """What autogenerate would change: empty when the models match the migrations."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": _outside_search}
        )
        return list(compare_metadata(context, Base.metadata))


def _outside_search(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave out the search's own tables and indexes (models.search), which the ORM metadata does not hold."""
    return not (type_ in ("table", "index") and is_search_object(name))
