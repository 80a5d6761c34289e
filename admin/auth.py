"""Who is logged in and what their role lets them do: Flask-Login, the login/logout pages, the failed-login
throttle and the permission checks every view shares.

Throttle: failures are counted per (email, client address) in memory. From the 5th consecutive failure the
pair is locked out for 30 seconds, doubling with every further failure up to 15 minutes; while locked out
even the right password is refused (HTTP 429), so guessing is capped at a handful of tries an hour.
A successful login clears the count.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from werkzeug.wrappers import Response as BaseResponse

from models.schema import Deal, Role, User
from models.users import find_user, verify_password

FREE_FAILURES = 4
FIRST_LOCKOUT = timedelta(seconds=30)
MAX_LOCKOUT = timedelta(minutes=15)
FORGET_AFTER = timedelta(hours=1)


@dataclass
class _Failures:
    count: int
    last_at: datetime
    locked_until: datetime | None


class LoginThrottle:
    """Consecutive failed logins per (email, address), with a lockout that doubles."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failures] = {}

    def locked_for(self, email: str, address: str, now: datetime) -> timedelta | None:
        with self._lock:
            entry = self._failures.get((email, address))
            if entry is None or entry.locked_until is None or entry.locked_until <= now:
                return None
            return entry.locked_until - now

    def failed(self, email: str, address: str, now: datetime) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bound memory under a spray of made-up emails
                self._failures = {k: v for k, v in self._failures.items() if now - v.last_at < FORGET_AFTER}
            key = (email, address)
            entry = self._failures.get(key)
            if entry is None or now - entry.last_at > FORGET_AFTER:
                entry = _Failures(0, now, None)
            entry.count += 1
            entry.last_at = now
            if entry.count > FREE_FAILURES:
                lockout = min(FIRST_LOCKOUT * 2 ** (entry.count - FREE_FAILURES - 1), MAX_LOCKOUT)
                entry.locked_until = now + lockout
            self._failures[key] = entry

    def succeeded(self, email: str, address: str) -> None:
        with self._lock:
            self._failures.pop((email, address), None)


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


def init_auth(app: Flask) -> None:
    from admin.app import db, now

    manager = LoginManager(app)
    manager.login_view = "login"
    manager.login_message = "Please log in to see this page."
    manager.session_protection = "strong"
    throttle = LoginThrottle()
    app.extensions["threadline_throttle"] = throttle

    @manager.user_loader  # type: ignore[untyped-decorator]
    def _load_user(user_id: str) -> LoggedInUser | None:
        if not user_id.isdigit():
            return None
        user = db().get(User, int(user_id))
        # a deactivated user is logged out on their next request
        return LoggedInUser(user) if user is not None and user.active else None

    @app.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | tuple[str, int] | str:
        next_url = safe_next(request.values.get("next"))
        if current_user.is_authenticated:
            return redirect(next_url or url_for("admin.index"))
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
        user = find_user(db(), email) if email else None
        if user is None or not verify_password(user, password) or not user.active:
            throttle.failed(email, address, moment)
            # the same message whether the email exists or not, so the form does not reveal accounts
            flash("Wrong email or password, or the account is disabled.", "danger")
            return render_template("threadline/login.html", next=next_url or "", email=email), 401
        throttle.succeeded(email, address)
        login_user(LoggedInUser(user))
        return redirect(next_url or url_for("admin.index"))

    @app.route("/logout", methods=["POST"])
    def logout() -> BaseResponse:
        logout_user()
        flash("You are logged out.", "info")
        return redirect(url_for("login"))


def safe_next(value: str | None) -> str | None:
    """Only a local path is a valid place to return to after login (no open redirect)."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    return value


def login_redirect() -> BaseResponse:
    return redirect(url_for("login", next=request.full_path if request.query_string else request.path))


# ---- permissions ---------------------------------------------------------------------------------------


def user() -> User:
    """The logged-in user's row in the current request's session."""
    from admin.app import db

    value = db().get(User, current_user.id)
    if value is None:
        abort(403)
    return value


def is_logged_in() -> bool:
    return bool(current_user.is_authenticated)


def role() -> Role | None:
    return current_user.role if current_user.is_authenticated else None


def is_admin() -> bool:
    return role() == Role.ADMIN


def is_manager_or_admin() -> bool:
    return role() in (Role.ADMIN, Role.MANAGER)


def can_write(record: Any) -> bool:
    """Managers and admins edit every sales record; a rep edits what they own (tasks: assigned to them)."""
    if not is_logged_in():
        return False
    if is_manager_or_admin():
        return True
    owner_id = getattr(record, "owner_id", None)
    if owner_id is None and hasattr(record, "assignee_id"):
        owner_id = record.assignee_id
    return owner_id is not None and owner_id == current_user.id


def require_write(record: Any) -> None:
    if not can_write(record):
        abort(403)


def can_move(deal: Deal) -> bool:
    return can_write(deal)
