"""The admin panel's Flask application: `create_app(settings)` wires sessions, login, CSRF and the views;
`serve(app, ...)` runs it under waitress until asked to stop.

One SQLAlchemy session per request (a thread-scoped session removed on teardown); every state-changing
request must carry a CSRF token (form field `csrf_token` or header `X-CSRFToken`); every page under /admin
requires a logged-in, active user.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, redirect, request, url_for
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from werkzeug.wrappers import Response as BaseResponse

from models.db import make_engine, make_sessionmaker
from models.schema import Notification
from settings import Settings

log = logging.getLogger("threadline.admin")

SECRET_FILE_NAME = ".threadline-secret"  # noqa: S105 (a file name, not a secret)
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def secret_key_path(settings: Settings) -> Path:
    """Where the generated secret key lives: next to the SQLite file, or the working directory."""
    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().resolve().parent / SECRET_FILE_NAME
    return Path.cwd() / SECRET_FILE_NAME


def load_or_create_secret_key(path: Path) -> str:
    """Read the persisted key, or create it once (mode 0600) so restarts keep everyone logged in."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="ascii").strip()
        if len(key) < 32:
            raise ValueError(f"{path} holds no usable secret key: delete it to have a new one made") from None
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session] | None = None,
    *,
    clock: Clock | None = None,
) -> Flask:
    """The admin panel for these settings; `sessions` defaults to a new engine on settings.database.url.

    `clock` returns the current UTC time (tests pass a fixed one so dashboard numbers are predictable).
    """
    from admin import auth, board, dashboard, health, records, syncstatus, views

    app = Flask(__name__, static_folder="static", static_url_path="/admin/threadline-static")
    secret = settings.admin.secret_key
    app.config.update(
        SECRET_KEY=secret.reveal()
        if secret is not None
        else load_or_create_secret_key(secret_key_path(settings)),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.admin.secure_cookies,
        SESSION_COOKIE_NAME="threadline_session",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.admin.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=12 * 3600,
        WTF_CSRF_SSL_STRICT=settings.admin.secure_cookies,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        FLASK_ADMIN_SWATCH="default",
    )
    owned_engine = None
    if sessions is None:
        owned_engine = make_engine(settings.database.url, echo=settings.database.echo)
        sessions = make_sessionmaker(owned_engine)
    db_session = RequestSession(sessions)
    app.extensions["threadline"] = AdminState(settings, db_session, clock or _utcnow, owned_engine)

    CSRFProtect(app)
    auth.init_auth(app)
    app.register_blueprint(health.blueprint(settings, sessions, clock or _utcnow))

    admin = Admin(
        app,
        name="Threadline",
        url="/admin",
        theme=Bootstrap4Theme(base_template="threadline/base.html", fluid=True),
        index_view=dashboard.DashboardView(name="Dashboard", url="/admin", endpoint="admin"),
    )
    views.register(admin, db_session)
    admin.add_view(board.BoardView(name="Board", endpoint="board", url="/admin/board"))
    admin.add_view(records.RecordsView(name="Records", endpoint="records", url="/admin/records"))
    admin.add_view(syncstatus.SyncStatusView(name="Sync status", endpoint="syncstatus", url="/admin/sync"))
    admin.add_view(
        syncstatus.NotificationsView(
            name="Notifications", endpoint="notifications", url="/admin/notifications"
        )
    )

    @app.before_request
    def _begin_request() -> None:
        # On SQLite a POST takes the write lock up front (BEGIN IMMEDIATE) so it queues behind the sync
        # daemon's batch instead of failing when its read transaction would have to upgrade.
        # (the login form writes nothing, and its slow password hash must not hold the lock)
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint != "login":
            session = db_session()
            if session.get_bind().dialect.name == "sqlite" and not session.in_transaction():
                session.connection(execution_options={"sqlite_immediate": True})

    @app.teardown_appcontext
    def _end_request(_exc: BaseException | None) -> None:
        db_session.remove()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-src 'self'; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'self'",
        )
        if request.path.startswith("/admin") and not request.path.startswith("/admin/threadline-static"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(CSRFError)
    def _csrf_error(error: CSRFError) -> tuple[str, int]:
        return f"Refused: {error.description} Go back, reload the page and try again.", 400

    @app.context_processor
    def _navbar() -> dict[str, Any]:
        return {"unread_notifications": unread_notifications}

    @app.route("/")
    def _root() -> BaseResponse:
        return redirect(url_for("admin.index"))

    return app


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
        self, settings: Settings, db_session: scoped_session[Session], clock: Clock, engine: Any
    ) -> None:
        self.settings = settings
        self.db_session = db_session
        self.clock = clock
        self.engine = engine


def state() -> AdminState:
    from flask import current_app

    value = current_app.extensions["threadline"]
    assert isinstance(value, AdminState)
    return value


def db() -> Session:
    """The current request's session."""
    return state().db_session()


def now() -> datetime:
    return state().clock()


def unread_notifications() -> int:
    from flask_login import current_user

    if not current_user.is_authenticated:
        return 0
    if "unread_notifications" not in g:
        g.unread_notifications = db().scalar(
            select(func.count(Notification.id)).where(
                Notification.user_id == current_user.id, Notification.read_at.is_(None)
            )
        )
    return int(g.unread_notifications or 0)


def serve(
    app: Flask,
    host: str,
    port: int,
    threads: int = 8,
    stop_event: threading.Event | None = None,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve the app with waitress; returns after `stop_event` is set (or never, without one)."""
    from waitress import wasyncore
    from waitress.server import create_server

    server: Any = create_server(app, host=host, port=port, threads=threads, ident="threadline")
    socket_map = server.map if hasattr(server, "map") else server._map
    if on_ready is not None:
        on_ready(str(server.effective_host), int(server.effective_port))
    log.info("admin panel listening on http://%s:%s/", server.effective_host, server.effective_port)
    try:
        while stop_event is None or not stop_event.is_set():
            # short polls so a stop request is noticed within a fraction of a second
            wasyncore.loop(timeout=0.25, map=socket_map, count=1)
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(socket_map)
        engine = app.extensions["threadline"].engine
        if engine is not None:
            engine.dispose()
