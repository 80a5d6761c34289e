"""Logging in and out: Flask-Login, the login and logout pages, and the checks that end stale sessions.

- Login does the same Argon2 work whether the email exists or not (models.users.authenticate), so the answer's
  timing does not reveal accounts; failures go through the throttle (admin.throttle).
- The session is cleared at login: nothing from before login survives into the logged-in one (no fixation).
- Every user has a session version (models.users); the session remembers the version it was made with and
  every request compares it. Logging out, a new password, a new role or deactivation raise the version, so
  every older session cookie of that user stops working, including copies.
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from flask import Flask, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now
from admin.throttle import LoginThrottle
from models.schema import User
from models.users import authenticate, end_sessions

SESSION_VERSION_KEY = "tl_session_version"
THROTTLE_EXTENSION = "threadline_throttle"


class LoggedInUser(UserMixin):  # type: ignore[misc]
    """What Flask-Login keeps for the request: a snapshot of the User row (the model has no Flask mixins)."""

    def __init__(self, user: User) -> None:
        self.id = user.id
        self.email = user.email
        self.name = user.name
        self.role = user.role
        self.active = user.active

    def get_id(self) -> str:
        return str(self.id)

    @property
    def is_active(self) -> bool:
        return bool(self.active)


def remember_session_version(user: User) -> None:
    """Keep the current session valid after the user's own session version changed (e.g. a new password)."""
    session[SESSION_VERSION_KEY] = user.session_version


HOME = "myday.index"
"""Where a login lands without a `next`: the user's day (models.agenda)."""


def init_auth(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "login"
    manager.login_message = "Please log in to see this page."
    manager.session_protection = "strong"
    throttle = LoginThrottle()
    app.extensions[THROTTLE_EXTENSION] = throttle

    @manager.user_loader  # type: ignore[untyped-decorator]
    def _load_user(user_id: str) -> LoggedInUser | None:
        if not user_id.isdigit():
            return None
        user = db().get(User, int(user_id))
        # deactivated, or logged out / given a new password or role since this session began: logged out
        if user is None or not user.active or session.get(SESSION_VERSION_KEY) != user.session_version:
            return None
        return LoggedInUser(user)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | tuple[str, int] | str:
        next_url = safe_next(request.values.get("next"))
        if current_user.is_authenticated:
            return redirect(next_url or url_for(HOME))
        if request.method == "GET":
            return render_template("threadline/login.html", next=next_url or "", email="")
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        address = request.remote_addr or "unknown"
        moment = now()
        wait = throttle.locked_for(email, address, moment)
        if wait is not None:
            seconds = math.ceil(wait.total_seconds())
            flash(f"Too many failed logins: try again in {seconds} seconds.", "danger")
            return render_template("threadline/login.html", next=next_url or "", email=email), 429
        user = authenticate(db(), email, password)
        if user is None:
            throttle.failed(email, address, moment)
            # the same message whether the email exists or not, so the form does not reveal accounts
            flash("Wrong email or password, or the account is disabled.", "danger")
            return render_template("threadline/login.html", next=next_url or "", email=email), 401
        throttle.succeeded(email, address)
        session.clear()
        login_user(LoggedInUser(user))
        remember_session_version(user)
        return redirect(next_url or url_for(HOME))

    @app.route("/logout", methods=["POST"])
    def logout() -> BaseResponse:
        if current_user.is_authenticated:
            end_sessions(permissions.user())
            db().commit()
        logout_user()
        session.clear()
        flash("You are logged out.", "info")
        return redirect(url_for("login"))


def safe_next(value: str | None) -> str | None:
    """Only a local path is a valid place to return to (no open redirect)."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    return value


def login_redirect() -> BaseResponse:
    return redirect(url_for("login", next=request.full_path if request.query_string else request.path))
