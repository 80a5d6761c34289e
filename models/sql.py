"""SQL pieces that SQLite and PostgreSQL spell differently: date arithmetic, timestamps as text, JSON objects.

Each is a SQLAlchemy function element compiled once per dialect, so the rules (models.rules), the reports
(models.reports) and the alert decision (models.notifications) write one query for both databases. On SQLite,
timestamps are stored as text 'YYYY-MM-DD HH:MM:SS.ffffff' (models.types.UTCDateTime); the pieces below keep
that shape wherever a result is compared with stored values.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, String, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from models.errors import DomainError
from models.types import UTCDateTime


def at(moment: datetime) -> ColumnElement[datetime]:
    """A timezone-aware moment as a bound parameter of the UTC datetime type (naive times are refused)."""
    if moment.tzinfo is None:
        raise DomainError(f"naive datetime {moment!r}: queries need a timezone-aware 'now'")
    return bindparam(None, moment, type_=UTCDateTime())


class shifted_by_seconds(FunctionElement[datetime]):
    """SQL `timestamp + seconds` (a SQL number expression, may be negative).

    On SQLite the result keeps the stored text shape (with millisecond precision) so it compares correctly.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "threadline_shifted_by_seconds"


@compiles(shifted_by_seconds)
def _shifted_default(element: shifted_by_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"({when} + make_interval(secs => {seconds}))"


@compiles(shifted_by_seconds, "sqlite")
def _shifted_sqlite(element: shifted_by_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"(strftime('%Y-%m-%d %H:%M:%f', {when}, ({seconds}) || ' seconds') || '000')"


class seconds_between(FunctionElement[float]):
    """SQL `(later - earlier)` in seconds, as a float: seconds_between(earlier, later)."""

    type = Float()
    inherit_cache = True
    name = "threadline_seconds_between"


@compiles(seconds_between)
def _between_default(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


class stamp_text(FunctionElement[str]):
    """A stored timestamp as key text: SQLite's stored text itself, PostgreSQL's epoch seconds.

    Both are cheap per row (no date parsing on SQLite) and independent of the session's time zone.
    """

    type = String()
    inherit_cache = True
    name = "threadline_stamp_text"


@compiles(stamp_text)
def _stamp_default(element: stamp_text, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST(CAST(FLOOR(EXTRACT(EPOCH FROM {value})) AS BIGINT) AS VARCHAR)"


@compiles(stamp_text, "sqlite")
def _stamp_sqlite(element: stamp_text, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"CAST({value} AS TEXT)"


class json_object(FunctionElement[Any]):
    """A JSON object from alternating name/value arguments."""

    type = JSON()
    inherit_cache = True
    name = "threadline_json_object"


@compiles(json_object)
def _json_default(element: json_object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_build_object({compiler.process(element.clauses, **kw)})"


@compiles(json_object, "sqlite")
def _json_sqlite(element: json_object, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_object({compiler.process(element.clauses, **kw)})"
