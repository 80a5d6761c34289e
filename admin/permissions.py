"""What the logged-in user's role lets them do: the checks every view and template shares.

Admins change everything; managers every sales record (and reassign owners); reps read everything and change
only what they own (tasks: what is assigned to them). An email has no owner of its own: it belongs to the
records it is filed on, so whoever may change its deal (or, before it has one, one of its contacts or its
company) may file it elsewhere. The server checks every write (403); pages hide what a role cannot do.
"""

from __future__ import annotations

from typing import Any

from flask import abort, g
from flask_login import current_user

from admin.context import db, settings
from models.privacy import BodyAccess, PrivacyPolicy, body_access
from models.schema import Activity, Deal, Role, User


def user() -> User:
    """The logged-in user's row in the current request's session."""
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


def may_write(role: Role, user_id: int, record: Any) -> bool:
    """Managers and admins edit every sales record; a rep edits what they own (tasks: assigned to them).

    The one rule for both doors: the panel's logged-in user (`can_write`) and an API key's user."""
    if role in (Role.ADMIN, Role.MANAGER):
        return True
    owner_id = getattr(record, "owner_id", None)
    if owner_id is None and hasattr(record, "assignee_id"):
        owner_id = record.assignee_id
    return owner_id is not None and owner_id == user_id


def can_write(record: Any) -> bool:
    """May the logged-in user change this record (`may_write`)?"""
    if not is_logged_in():
        return False
    return may_write(current_user.role, current_user.id, record)


def require_write(record: Any) -> None:
    if not can_write(record):
        abort(403)


def can_move(deal: Deal) -> bool:
    return can_write(deal)


def can_refile(email: Activity) -> bool:
    """May the user file this email on another deal? Only if they may change where it is filed now."""
    if not is_logged_in():
        return False
    if is_manager_or_admin():
        return True
    if email.deal is not None:
        return can_write(email.deal)
    return any(can_write(contact) for contact in email.contacts) or (
        email.company is not None and can_write(email.company)
    )


def privacy_policy() -> PrivacyPolicy:
    config = settings()
    return PrivacyPolicy(config.mailboxes, admins_read_private=config.admin.admins_read_private)


def bodies() -> BodyAccess:
    """What of private mailboxes' mail the logged-in user may read in full (models.privacy owns the rule);
    built once per request."""
    if "body_access" not in g:
        g.body_access = body_access(db(), user() if is_logged_in() else None, privacy_policy())
    access = g.body_access
    assert isinstance(access, BodyAccess)
    return access


def can_read_body(email: Activity) -> bool:
    """May the logged-in user read this email's body, HTML, attachments and raw message?"""
    return bodies().can_read(email)
