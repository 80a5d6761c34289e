"""Staff members: creating them and checking their passwords (Argon2, a deliberately slow hash)."""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.contacts import normalize_email
from models.errors import DomainError
from models.schema import Role, User

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


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
        name=name.strip() or address,
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
