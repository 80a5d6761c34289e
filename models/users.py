"""Staff members: creating and changing them, checking their passwords (Argon2, a deliberately slow hash),
and ending their login sessions.

Every user has a `session_version`; a login session remembers the version it began with and is refused once
the user's version has moved on. Logging out, a new password, a new role and deactivation move it, so no copy
of an older session cookie keeps working.

The one owner of the rule for a staff member's name (`normalize_user_name`): `create_user` (the CLI's `user
add`) and `update_user` (the panel's user form) call it. A name ends up on every page and in the To: header
of alert digests, so a line break or any other control character in it is refused.
"""

from __future__ import annotations

import secrets
import unicodedata
from datetime import datetime
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.contacts import normalize_email
from models.errors import DomainError
from models.schema import Role, User

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = 200  # users.name


def normalize_user_name(name: str, *, email: str) -> str:
    """The name as stored: trimmed, the email address when empty.

    Raises DomainError for a line break or another control character, or a name over MAX_NAME_LENGTH.
    """
    text = name.strip()
    bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        what = "a line break" if bad in "\r\n\x0b\x0c\x85\u2028\u2029" else f"the control character {bad!r}"
        raise DomainError(f"a name cannot contain {what}: {text!r}")
    if len(text) > MAX_NAME_LENGTH:
        raise DomainError(f"a name can be at most {MAX_NAME_LENGTH} characters")
    return text or email


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(user: User, password: str) -> bool:
    if not user.password_hash:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(
    session: Session, email: str, *, name: str, role: Role | str, password: str, now: datetime
) -> User:
    address = normalize_email(email)
    if address is None:
        raise DomainError(f"{email!r} is not an email address")
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise DomainError(f"a user with the email {address} already exists")
    try:
        role = Role(role)
    except ValueError:
        raise DomainError(f"role must be one of admin, manager, rep; got {role!r}") from None
    user = User(
        email=address,
        name=normalize_user_name(name, email=address),
        role=role,
        password_hash=hash_password(password),
        active=True,
        alerts_enabled=True,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash of a password nobody knows, checked when the email is unknown so both cases cost the same."""
    return _hasher.hash(secrets.token_urlsafe(32))


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, or None.

    The same Argon2 verification runs whether the email is known or not, whether the account is active or not,
    so the time of the answer does not tell which accounts exist.
    """
    user = find_user(session, email) if email.strip() else None
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    matches: bool
    try:
        matches = _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        matches = False
    if user is None or not user.password_hash or not matches or not user.active:
        return None
    return user


def end_sessions(user: User) -> None:
    """Log the user out everywhere: every login session that began before now stops working."""
    user.session_version = (user.session_version or 0) + 1


def update_user(
    session: Session,
    user: User,
    *,
    email: str,
    name: str,
    role: Role | str,
    active: bool,
    alerts_enabled: bool,
    password: str | None = None,
) -> None:
    """Change a user; a new password, a new role or deactivation ends the user's login sessions."""
    address = normalize_email(email)
    if address is None:
        raise DomainError(f"{email!r} is not an email address")
    taken = session.scalar(select(User.id).where(User.email == address, User.id != user.id))
    if taken is not None:
        raise DomainError(f"a user with the email {address} already exists")
    try:
        new_role = Role(role)
    except ValueError:
        raise DomainError(f"role must be one of admin, manager, rep; got {role!r}") from None
    new_name = normalize_user_name(name, email=address)
    ends_sessions = bool(password) or new_role != user.role or (user.active and not active)
    if password:
        user.password_hash = hash_password(password)
    user.email = address
    user.name = new_name
    user.role = new_role
    user.active = active
    user.alerts_enabled = alerts_enabled
    if ends_sessions:
        end_sessions(user)
    session.flush()
