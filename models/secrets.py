"""Encryption at rest for the secrets Threadline keeps in its database: one owner for that rule.

Refresh tokens, access tokens and passwords typed into the panel are stored as Fernet tokens (AES-128-CBC with
an HMAC-SHA256, from `cryptography`), under a key that lives outside the database ([secrets] key_env or
key_file). A database dump or backup alone reveals none of them.

The key setting may hold several keys, newest first (MultiFernet): the first encrypts, every one decrypts.
A key is rotated by putting a new one in front, running `threadline secrets rotate` (which re-encrypts every
stored secret with it) and then dropping the old one.

`check_stored_secrets` is what every command that opens the database runs first: encrypted secrets with no
key, or with a key that cannot read them, is one clear `SecretKeyError` (the CLI prints one line and exits 2)
rather than a failure deep inside a sync.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from models.schema import Mailbox, OAuthGrant, WebhookSubscription
from settings.model import ConfigError, SecretsSettings

__all__ = [
    "ENCRYPTED_COLUMNS",
    "SecretBox",
    "SecretKeyError",
    "check_stored_secrets",
    "generate_key",
    "require_box",
    "rotate_stored_secrets",
    "secret_box",
    "stored_secret_count",
]

# Every column holding an encrypted secret. A new secret column is added here, or it is not encrypted.
ENCRYPTED_COLUMNS: tuple[InstrumentedAttribute[str | None], ...] = (
    Mailbox.password_encrypted,
    OAuthGrant.refresh_token_encrypted,
    OAuthGrant.access_token_encrypted,
    WebhookSubscription.secret_encrypted,
)

_HOW_TO_SET = "set [secrets] key_env (an environment variable) or key_file to the key"


class SecretKeyError(ConfigError):
    """The encryption key is missing or does not fit the stored secrets: a configuration mistake (exit 2)."""


class SecretBox:
    """Encrypts and decrypts stored secrets with the configured key(s). Never shows the keys."""

    __slots__ = ("_count", "_fernet")

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretKeyError(f"no encryption key: {_HOW_TO_SET}")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            raise SecretKeyError(
                "an encryption key is not a Fernet key (make one with `threadline secrets generate-key`)"
            ) from None
        self._count = len(keys)

    def __repr__(self) -> str:
        return f"SecretBox({self._count} key{'s' if self._count != 1 else ''})"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(
                "a secret in the database cannot be decrypted with the configured key: if the key was "
                "changed, list the old key after the new one in [secrets] and run `threadline secrets rotate`"
            ) from None

    def rotate(self, token: str) -> str:
        """The same secret encrypted with the first key."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretKeyError("a stored secret cannot be decrypted with any configured key") from None


def secret_box(settings: SecretsSettings) -> SecretBox | None:
    """The box for the configured key, or None when no key is configured."""
    return SecretBox(settings.keys) if settings.keys else None


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def require_box(box: SecretBox | None, what: str) -> SecretBox:
    """The box, or a SecretKeyError saying what could not be stored or read without it."""
    if box is None:
        raise SecretKeyError(f"cannot {what} without an encryption key: {_HOW_TO_SET}")
    return box


def stored_secret_count(session: Session) -> int:
    total = 0
    for column in ENCRYPTED_COLUMNS:
        total += session.scalar(select(func.count()).where(column.is_not(None))) or 0
    return total


def check_stored_secrets(session: Session, box: SecretBox | None) -> None:
    """Raise SecretKeyError when secrets are stored but no key is configured, or the key cannot read them."""
    count = stored_secret_count(session)
    if not count:
        return
    if box is None:
        raise SecretKeyError(
            f"the database holds {count} encrypted secret{'s' if count != 1 else ''} (mailbox passwords or "
            f"OAuth tokens) but no encryption key is configured: {_HOW_TO_SET} they were encrypted with"
        )
    for column in ENCRYPTED_COLUMNS:
        sample = session.scalar(select(column).where(column.is_not(None)).limit(1))
        if sample is not None:
            box.decrypt(sample)


def rotate_stored_secrets(session: Session, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the box's first key; returns how many were rewritten."""
    rewritten = 0
    for column in ENCRYPTED_COLUMNS:
        table = column.class_
        rows = session.execute(select(table.id, column).where(column.is_not(None))).all()  # type: ignore[attr-defined]
        for row_id, token in rows:
            session.execute(
                update(table).where(table.id == row_id).values({column.key: box.rotate(token)})  # type: ignore[attr-defined]
            )
            rewritten += 1
    return rewritten
