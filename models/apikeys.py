"""API keys: making one (shown once), finding the key a request presents, listing and revoking.

A key is `tl_` followed by 32 random bytes in URL-safe base64 (256 bits from `secrets`). Only its SHA-256
is stored. A slow password hash (Argon2) is for secrets people choose and attackers can guess; a 256-bit
random token cannot be guessed, so one SHA-256 is as safe against a stolen database and lets every request
find its key with one indexed lookup instead of an Argon2 verification per key. The first characters after
`tl_` are kept in clear (`prefix`) so lists can show which key is which.

A key acts as its user with the user's role at the moment of the request: a deactivated user's keys stop
working, a demoted user's keys lose what the role lost. `last_used_at` is written at most once a minute per
key, so a busy integration does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import DomainError, NotFoundError
from models.schema import ApiKey, User

TOKEN_PREFIX = "tl_"  # noqa: S105 (the marker every key starts with, not a secret)
SHOWN_PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class NewKey:
    """A key just made: `token` is the only copy of the secret, to show once."""

    key: ApiKey
    token: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_key(
    session: Session, user: User, *, name: str, now: datetime, created_by: User | None = None
) -> NewKey:
    """A new key for `user` (made by them, or by an admin for them)."""
    label = name.strip()
    if not label:
        raise DomainError("an API key needs a name (say which tool uses it)")
    if len(label) > MAX_NAME_LENGTH:
        raise DomainError(f"an API key's name can be at most {MAX_NAME_LENGTH} characters")
    if not user.active:
        raise DomainError(f"{user.email} is deactivated: a key for them would not work")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        user=user,
        name=label,
        prefix=token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + SHOWN_PREFIX_LENGTH],
        token_hash=hash_token(token),
        created_at=now,
        created_by=created_by or user,
    )
    session.add(key)
    session.flush()
    return NewKey(key, token)


def key_for_token(session: Session, token: str, *, now: datetime) -> ApiKey | None:
    """The live key this token is, with an active user; None for anything else (unknown, revoked, a
    deactivated user). Records the use (at most once a minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    key = session.scalar(select(ApiKey).where(ApiKey.token_hash == hash_token(token)))
    if key is None or key.revoked_at is not None or not key.user.active:
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = now
    return key


def list_api_keys(session: Session, user: User | None = None) -> list[ApiKey]:
    """Keys newest first: one user's, or everyone's (user None)."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    if user is not None:
        query = query.where(ApiKey.user_id == user.id)
    return list(session.scalars(query))


def get_api_key(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFoundError(f"API key {key_id} does not exist")
    return key


def revoke_api_key(session: Session, key: ApiKey, *, now: datetime) -> bool:
    """Stop a key working from now on; False if it was revoked already."""
    if key.revoked_at is not None:
        return False
    key.revoked_at = now
    session.flush()
    return True
