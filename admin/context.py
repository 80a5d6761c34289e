"""The panel's shared state, for every view: the settings, the request's database session and the clock.

Like flaskr's `db.py` (`get_db()`, `init_app(app)`): the factory (admin.app) calls `init_app` once, and the
views call `db()`, `now()` and `settings()` during a request. Views import this module, never the factory's
module, so admin/ has no import circle.

One SQLAlchemy session per request: a thread-scoped session, removed when the request's app context ends.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import datetime

from flask import Flask, current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from admin.connect import MailboxConnector
from settings import Settings

Clock = Callable[[], datetime]
EXTENSION = "threadline"


class RequestSession(scoped_session[Session]):
    """The per-request session (thread-scoped, removed at teardown) handed to Flask-Admin's views.

    Flask-Admin 2.x warns when given a bare session and wants a `db` object with a `.session`; this scoped
    session is its own `.session`, so the views use it directly and nothing is deprecated.
    """

    @property
    def session(self) -> RequestSession:
        return self


class AdminState:
    """What the views need from the factory: settings, the request-scoped session and the clock."""

    def __init__(
        self, settings: Settings, db_session: RequestSession, clock: Clock, engine: Engine | None
    ) -> None:
        self.settings = settings
        self.db_session = db_session
        self.clock = clock
        self.engine = engine
        """The engine the app made itself (and disposes of when served), or None when it was given one."""
        self.connector: MailboxConnector | None = None
        """Connects mailboxes through OAuth from the panel (given by the shell), or None."""


def init_app(
    app: Flask, settings: Settings, sessions: sessionmaker[Session], clock: Clock, engine: Engine | None
) -> AdminState:
    """Attach the shared state to the app and end each request's session when its context ends."""
    state = AdminState(settings, RequestSession(sessions), clock, engine)
    app.extensions[EXTENSION] = state

    @app.teardown_appcontext
    def _end_request(_exc: BaseException | None) -> None:
        state.db_session.remove()

    return state


def state_of(app: Flask) -> AdminState:
    value = app.extensions[EXTENSION]
    assert isinstance(value, AdminState)
    return value


def state() -> AdminState:
    return state_of(current_app)


def db() -> Session:
    """The current request's session."""
    return state().db_session()


def now() -> datetime:
    """The current time in UTC (tests give the app a fixed clock)."""
    return state().clock()


def connector() -> MailboxConnector | None:
    return state().connector


def settings() -> Settings:
    return state().settings


def team_tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings().team.timezone)
