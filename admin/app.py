"""The admin panel's Flask application: `create_app(settings)` wires the shared state, login, CSRF, security
headers, error pages and every view; `serve(app, ...)` runs it under waitress until asked to stop.

This is the top of admin/: it imports the views to register them, and nothing in admin/ imports it (views
reach the shared state through admin.context). Every state-changing request must carry a CSRF token (form
field `csrf_token` or header `X-CSRFToken`); every page under /admin requires a logged-in, active user.
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

from flask import Flask, redirect, request, url_for
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Response as BaseResponse

from admin import auth, context, errors, health, security
from admin.api import init_api
from admin.connect import MailboxConnector
from admin.views.activities import ActivityView
from admin.views.apikeys import ApiKeysView
from admin.views.base import ThreadlineModelView
from admin.views.board import BoardView
from admin.views.companies import CompanyView
from admin.views.contacts import ContactView
from admin.views.dashboard import DashboardView
from admin.views.deals import DealView
from admin.views.mailboxes import MailboxesView, reconnect_needed
from admin.views.merge import MergeView
from admin.views.myday import MyDayView
from admin.views.notifications import NotificationsView, unread_notifications
from admin.views.pipelines import PipelineEditorView
from admin.views.quick import QuickAddView
from admin.views.records import RecordsView
from admin.views.search import SearchView
from admin.views.syncstatus import SyncStatusView
from admin.views.tasks import TaskView
from admin.views.users import UserView
from admin.views.webhooks import WebhooksView
from admin.words import label
from models.db import make_engine, make_sessionmaker
from models.schema import Activity, Company, Contact, Deal, Task, User
from settings import Settings

log = logging.getLogger("threadline.admin")

SECRET_FILE_NAME = ".threadline-secret"  # noqa: S105 (a file name, not a secret)


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
    clock: context.Clock | None = None,
    connector: MailboxConnector | None = None,
) -> Flask:
    """The admin panel for these settings; `sessions` defaults to a new engine on settings.database.url.

    `clock` returns the current UTC time (tests pass a fixed one so dashboard numbers are predictable).
    `connector` connects mailboxes through OAuth (admin.connect); without it the panel points to the CLI.
    """
    app = Flask(__name__, static_folder="static", static_url_path=security.STATIC_PREFIX)
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
    state = context.init_app(app, settings, sessions, clock or _utcnow, owned_engine)
    state.connector = connector
    security.trust_proxies(app, settings.admin.trusted_proxy_hops)
    security.init_security(app)
    CSRFProtect(app)
    auth.init_auth(app)
    app.register_blueprint(health.blueprint(settings, sessions, clock or _utcnow))
    init_api(app, settings.api)

    admin = Admin(
        app,
        name="Threadline",
        url="/admin",
        theme=Bootstrap4Theme(base_template="threadline/base.html", fluid=True),
        index_view=DashboardView(name="Dashboard", url="/admin", endpoint="admin"),
        csp_nonce_generator=security.csp_nonce,
    )
    add_views(admin, state.db_session)
    errors.init_errors(app, admin.index_view)

    @app.before_request
    def _begin_request() -> None:
        # On SQLite a POST takes the write lock up front (BEGIN IMMEDIATE) so it queues behind the sync
        # daemon's batch instead of failing when its read transaction would have to upgrade.
        # (the login form writes nothing, and its slow password hash must not hold the lock)
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint != "login":
            session = context.db()
            if session.get_bind().dialect.name == "sqlite" and not session.in_transaction():
                session.connection(execution_options={"sqlite_immediate": True})

    app.context_processor(
        lambda: {
            "unread_notifications": unread_notifications,
            "reconnect_needed": reconnect_needed,
            "label": label,
        }
    )

    @app.route("/")
    def _root() -> BaseResponse:
        return redirect(url_for("myday.index"))

    return app


def add_views(admin: Admin, db_session: context.RequestSession) -> None:
    """Every page of the panel, in menu order."""
    admin.add_view(MyDayView(name="My day", endpoint="myday", url="/admin/day"))
    records: tuple[tuple[type[ThreadlineModelView], type[Any], str, str], ...] = (
        (ContactView, Contact, "Contacts", "contact"),
        (CompanyView, Company, "Companies", "company"),
        (DealView, Deal, "Deals", "deal"),
        (TaskView, Task, "Planned activities", "task"),
        (ActivityView, Activity, "Activities", "activity"),
    )
    for view, model, name, endpoint in records:
        admin.add_view(view(model, db_session, name=name, endpoint=endpoint))
    configuration: tuple[tuple[type[ThreadlineModelView], type[Any], str, str], ...] = (
        (UserView, User, "Users", "user"),
    )
    for view, model, name, endpoint in configuration:
        admin.add_view(view(model, db_session, name=name, endpoint=endpoint, category="Settings"))
    admin.add_view(
        PipelineEditorView(
            name="Pipelines", endpoint="pipeline_editor", url="/admin/pipelines", category="Settings"
        )
    )
    admin.add_view(BoardView(name="Board", endpoint="board", url="/admin/board"))
    admin.add_view(RecordsView(name="Records", endpoint="records", url="/admin/records"))
    admin.add_view(SearchView(name="Search", endpoint="search", url="/admin/search"))
    admin.add_view(QuickAddView(name="New", endpoint="quick", url="/admin/quick"))
    admin.add_view(SyncStatusView(name="Sync status", endpoint="syncstatus", url="/admin/sync"))
    admin.add_view(MailboxesView(name="Mailboxes", endpoint="mailboxes", url="/admin/mailboxes"))
    admin.add_view(MergeView(name="Duplicates", endpoint="merge", url="/admin/merge"))
    admin.add_view(
        NotificationsView(name="Notifications", endpoint="notifications", url="/admin/notifications")
    )
    admin.add_view(
        ApiKeysView(name="API keys", endpoint="apikeys", url="/admin/api-keys", category="Settings")
    )
    admin.add_view(
        WebhooksView(
            name="Webhooks", endpoint="webhook_subscriptions", url="/admin/webhooks", category="Settings"
        )
    )


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
        engine = context.state_of(app).engine
        if engine is not None:
            engine.dispose()
