"""The list filters the record views declare as class attributes, and the option lists they offer.

Option lists (users, stages, pipelines) are functions: Flask-Admin asks once at start-up, outside any request
(answered with an empty list), and the list views ask again on every request (ThreadlineModelView), so a user
or stage added while the panel runs shows up at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import has_request_context
from flask_admin.contrib.sqla.filters import DateBetweenFilter, FilterEqual
from sqlalchemy import select
from wtforms.fields.choices import SelectChoice

from admin.context import db, team_tz
from admin.words import label
from models.schema import Pipeline, Stage, User


class UTCDateBetweenFilter(DateBetweenFilter):  # type: ignore[misc]
    """A day range in the team's time zone applied to a UTC timestamp column."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        start, end = value
        tz = team_tz()
        low = datetime.combine(start, time.min, tz).astimezone(UTC)
        high = datetime.combine(end + timedelta(days=1), time.min, tz).astimezone(UTC)
        column = self.get_column(alias)
        return query.filter(column >= low, column < high)


class EnumValueFilter(FilterEqual):  # type: ignore[misc]
    def __init__(self, column: Any, name: str, enum_class: Any) -> None:
        self.enum_class = enum_class
        super().__init__(column, name, options=[(m.value, label(m)) for m in enum_class])

    def clean(self, value: str) -> Any:
        return self.enum_class(value)

    def validate(self, value: str) -> bool:
        return value in {m.value for m in self.enum_class}


def user_options() -> list[tuple[str, str]]:
    if not has_request_context():  # Flask-Admin also asks once at start-up; real options come per request
        return []
    return [(str(u.id), u.name) for u in db().scalars(select(User).order_by(User.name))]


def stage_options() -> list[tuple[str, str]]:
    if not has_request_context():
        return []
    rows = db().execute(
        select(Stage.id, Stage.name, Pipeline.name).join(Pipeline).order_by(Pipeline.position, Stage.position)
    )
    return [(str(sid), f"{pname} / {sname}") for sid, sname, pname in rows]


def pipeline_options() -> list[tuple[str, str]]:
    if not has_request_context():
        return []
    return [(str(p.id), p.name) for p in db().scalars(select(Pipeline).order_by(Pipeline.position))]


def choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    # WTForms 3.3 deprecates (value, label) tuples, and warnings are errors in the test suite
    return [SelectChoice(value, label) for value, label in pairs]
