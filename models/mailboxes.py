"""Mailboxes managed in the database and their OAuth grants: the domain operations on both.

Two kinds of mailbox exist side by side. [[mailboxes]] in the TOML file are the installer's (read-only in the
panel); rows of `mailboxes` are added, edited, paused and removed in the panel. `effective_mailboxes` merges
both into the one list the daemon syncs, as the same frozen `MailboxSettings` either way.

A mailbox that signs in with OAuth has an `OAuthGrant`, keyed by the mailbox's name (so TOML mailboxes can be
connected too). Every token and password passes through models.secrets on its way in and out: this module
never writes one to a column in clear, and never puts one in a repr, a log line or an error message.

Removing a mailbox deletes its grant and its password and marks the row removed (it leaves every list and
the daemon); the email it logged stays (activities and their sightings name the mailbox), and so does its
sync cursor, so adding the same mailbox again carries on where it stopped instead of fetching everything
twice. The row itself stays so that mail keeps its owner and its privacy (models.privacy): removing a
private mailbox never opens its mail to everyone. Adding a mailbox of the same name takes the row over.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from models.contacts import normalize_email
from models.errors import DomainError, NotFoundError
from models.notifications import notify_reconnect_needed
from models.schema import FolderSyncState, GrantFlow, GrantState, Mailbox, MailboxStatus, OAuthGrant, User
from models.secrets import SecretBox, require_box
from settings.model import (
    NO_PASSWORD,
    MailboxAuth,
    MailboxSettings,
    MailboxSettingsError,
    MailboxSource,
    OAuthPreset,
    OAuthProviderSettings,
    SaslMechanism,
    Secret,
    Sharing,
    validate_mailbox,
)

log = logging.getLogger(__name__)

__all__ = [
    "MailboxFields",
    "MailboxOverview",
    "MailboxState",
    "create_mailbox",
    "delete_grant",
    "effective_mailboxes",
    "find_grant",
    "forget_access_token",
    "grant_access_token",
    "grant_refresh_token",
    "grant_versions",
    "mailbox_fields",
    "mailbox_overview",
    "mark_reconnect_needed",
    "own_mailbox_fields",
    "pause_mailbox",
    "provider_label",
    "reconnect_needed_of",
    "remove_mailbox",
    "resume_mailbox",
    "self_connect_providers",
    "set_sharing",
    "store_grant",
    "update_grant_tokens",
    "update_mailbox",
]


# ---- mailboxes ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxFields:
    """What an admin fills in for a mailbox (everything but the password, which is passed on its own)."""

    name: str
    host: str
    username: str
    port: int = 993
    security: str = "ssl"
    auth: MailboxAuth = MailboxAuth.PASSWORD
    provider: str | None = None
    sasl: SaslMechanism | None = None
    folders: tuple[str, ...] = ()
    owner: str | None = None  # a user's email
    address: str | None = None
    poll_seconds: int = 60
    idle: bool = True
    tls_ca_file: str | None = None
    timeout_seconds: float = 30.0
    sharing: Sharing = Sharing.SHARED


def mailbox_fields(mailbox: Mailbox) -> MailboxFields:
    """The current values of a stored mailbox, e.g. to fill an edit form (the password is not among them)."""
    return MailboxFields(
        name=mailbox.name,
        host=mailbox.host,
        username=mailbox.username,
        port=mailbox.port,
        security=mailbox.security,
        auth=mailbox.auth,
        provider=mailbox.provider,
        sasl=mailbox.sasl,
        folders=tuple(mailbox.folders or ()),
        owner=mailbox.owner.email if mailbox.owner is not None else None,
        address=mailbox.address,
        poll_seconds=mailbox.poll_seconds,
        idle=mailbox.idle,
        tls_ca_file=mailbox.tls_ca_file,
        timeout_seconds=mailbox.timeout_seconds,
        sharing=mailbox.sharing,
    )


def create_mailbox(
    session: Session,
    fields: MailboxFields,
    *,
    password: str | None = None,
    box: SecretBox | None,
    providers: Mapping[str, OAuthProviderSettings],
    config_names: Collection[str] = (),
    now: datetime,
) -> Mailbox:
    """Add a mailbox; its password (auth 'password') is stored encrypted. The name must be new, also among
    the [[mailboxes]] of the config file (config_names)."""
    name = fields.name.strip()
    if name in config_names:
        raise DomainError(f"a mailbox named {name!r} is already defined in the config file")
    mailbox = session.scalar(select(Mailbox).where(Mailbox.name == name))
    if mailbox is not None and mailbox.removed_at is None:
        raise DomainError(f"a mailbox named {name!r} already exists")
    revived = mailbox is not None
    if mailbox is None:
        mailbox = Mailbox(name=name, created_at=now)
    _apply(session, mailbox, fields, password=password, box=box, providers=providers, now=now)
    mailbox.removed_at = None
    mailbox.paused_at = None
    if not revived:
        session.add(mailbox)
    session.flush()
    return mailbox


# ---- a rep connecting a mailbox of their own ------------------------------------------------------------

_PRESET_LABELS = {OAuthPreset.MICROSOFT: "Microsoft 365", OAuthPreset.GOOGLE: "Google"}


def provider_label(provider: OAuthProviderSettings) -> str:
    """How people call a provider: "Microsoft 365", "Google", or the [oauth.NAME] name of a generic one."""
    return _PRESET_LABELS.get(provider.preset, provider.name)


def self_connect_providers(providers: Mapping[str, OAuthProviderSettings]) -> dict[str, str]:
    """The providers a rep can connect a new mailbox of their own through (name: label): those that know
    their mailboxes' IMAP host (the presets do; a generic one needs imap_host in [oauth.NAME])."""
    usable = {name: provider_label(p) for name, p in sorted(providers.items()) if p.imap_host}
    return dict(sorted(usable.items(), key=lambda item: item[1].lower()))


def own_mailbox_fields(
    session: Session,
    owner: User,
    address: str,
    *,
    provider: str,
    sharing: Sharing,
    providers: Mapping[str, OAuthProviderSettings],
    config_names: Collection[str] = (),
) -> MailboxFields:
    """The mailbox `owner` connects for themselves: `address` at `provider`'s IMAP host (993, TLS), signing
    in with OAuth, owned by them. Its name comes from the address, made unique; an earlier removed mailbox
    of theirs for the same address is taken over (its sync carries on), nobody else's ever is (removed
    mailboxes keep their owner and privacy for the mail they logged). Add it with create_mailbox."""
    settings = providers.get(provider)
    if settings is None or not settings.imap_host:
        raise DomainError("choose one of the providers offered")
    normalized = normalize_email(address)
    if normalized is None:
        raise DomainError(f"{address.strip()!r} is not an email address")
    existing = session.scalar(
        select(Mailbox.name).where(
            Mailbox.owner_id == owner.id, Mailbox.username == normalized, Mailbox.removed_at.is_(None)
        )
    )
    if existing is not None:
        raise DomainError(f"you already have mailbox {existing!r} for {normalized}: connect it there")
    rows = session.scalars(select(Mailbox).where(Mailbox.name.like(f"{_slug(normalized)}%"))).all()
    name = _free_name(_slug(normalized), rows, owner, normalized, config_names)
    return MailboxFields(
        name=name, host=settings.imap_host, username=normalized, port=993, security="ssl",
        auth=MailboxAuth.OAUTH, provider=provider, owner=owner.email, address=normalized, sharing=sharing,
    )  # fmt: skip


def _slug(address: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", address.lower()).strip("-")[:150] or "mailbox"


def _free_name(
    base: str, rows: Sequence[Mailbox], owner: User, address: str, config_names: Collection[str]
) -> str:
    taken = {r.name: r for r in rows}
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        row = taken.get(name)
        if name in config_names:
            continue
        theirs = row is not None and row.owner_id == owner.id and row.username == address
        if row is None or (theirs and row.removed_at is not None):
            return name
    raise DomainError(f"too many mailboxes named after {address}")


def update_mailbox(
    session: Session,
    name: str,
    fields: MailboxFields,
    *,
    password: str | None = None,
    box: SecretBox | None,
    providers: Mapping[str, OAuthProviderSettings],
    now: datetime,
) -> Mailbox:
    """Change a stored mailbox. password=None keeps the stored one (when the auth kind still needs one).

    A mailbox is not renamed: its name is what its logged mail, sync cursor and grant are filed under.
    Moving to another account (host, username), provider or auth kind drops the grant, which belonged to
    the old one.
    """
    mailbox = _get(session, name)
    if fields.name.strip() != mailbox.name:
        raise DomainError(
            f"mailbox {mailbox.name!r} cannot be renamed: its logged mail is filed under that name"
        )
    account_changed = (fields.host, fields.username, fields.auth, fields.provider) != (
        mailbox.host,
        mailbox.username,
        mailbox.auth,
        mailbox.provider,
    )
    _apply(session, mailbox, fields, password=password, box=box, providers=providers, now=now)
    if account_changed:
        session.execute(delete(OAuthGrant).where(OAuthGrant.mailbox == mailbox.name))
    session.flush()
    return mailbox


def pause_mailbox(session: Session, name: str, *, now: datetime) -> Mailbox:
    """Stop syncing a stored mailbox (it leaves the effective list) without forgetting anything."""
    mailbox = _get(session, name)
    if mailbox.paused_at is None:
        mailbox.paused_at = now
        mailbox.updated_at = now
    return mailbox


def set_sharing(session: Session, name: str, sharing: Sharing, *, now: datetime) -> Mailbox:
    """Make a stored mailbox shared or private (its owner chooses when connecting it; admins in the form)."""
    mailbox = _get(session, name)
    if mailbox.sharing is not sharing:
        mailbox.sharing = sharing
        mailbox.updated_at = now
    return mailbox


def resume_mailbox(session: Session, name: str, *, now: datetime) -> Mailbox:
    mailbox = _get(session, name)
    if mailbox.paused_at is not None:
        mailbox.paused_at = None
        mailbox.updated_at = now
    return mailbox


def remove_mailbox(session: Session, name: str, *, box: SecretBox | None, now: datetime) -> str | None:
    """Remove a stored mailbox: its grant and password are deleted, it is no longer listed nor synced; what it
    logged stays, with its privacy. Returns the grant's refresh token (in memory only) when there was one,
    so the caller can revoke it at the provider; None otherwise."""
    mailbox = _get(session, name)
    refresh_token = delete_grant(session, mailbox.name, box=box)
    mailbox.password_encrypted = None
    mailbox.removed_at = now
    mailbox.updated_at = now
    session.flush()
    return refresh_token


def effective_mailboxes(
    session: Session,
    config_mailboxes: Sequence[MailboxSettings],
    *,
    box: SecretBox | None,
    include_paused: bool = False,
) -> tuple[MailboxSettings, ...]:
    """Every mailbox to sync: the config file's, then the database's (by name), as frozen settings.

    A stored mailbox with the name of a config one is left out (the file wins) with a warning. Paused
    mailboxes are left out unless include_paused. A stored password is decrypted here, into a Secret.
    """
    result = list(config_mailboxes)
    taken = {m.name for m in config_mailboxes}
    query = select(Mailbox).where(Mailbox.removed_at.is_(None)).order_by(Mailbox.name)
    if not include_paused:
        query = query.where(Mailbox.paused_at.is_(None))
    owners = {u.id: u.email for u in session.scalars(select(User).where(User.id.in_(
        select(Mailbox.owner_id).where(Mailbox.owner_id.is_not(None))
    )))}  # fmt: skip
    for mailbox in session.scalars(query):
        if mailbox.name in taken:
            log.warning(
                "mailbox %r is defined in the config file and in the database: using the file's", mailbox.name
            )
            continue
        result.append(_as_settings(mailbox, owners.get(mailbox.owner_id or 0), box))
    return tuple(result)


def _as_settings(mailbox: Mailbox, owner: str | None, box: SecretBox | None) -> MailboxSettings:
    password = NO_PASSWORD
    if mailbox.password_encrypted is not None:
        secret = require_box(box, f"read the password of mailbox {mailbox.name!r}")
        password = Secret(secret.decrypt(mailbox.password_encrypted), f"mailbox {mailbox.name!r} (database)")
    return MailboxSettings(
        name=mailbox.name,
        host=mailbox.host,
        username=mailbox.username,
        password=password,
        port=mailbox.port,
        security=mailbox.security,
        folders=tuple(mailbox.folders or ()),
        owner=owner,
        poll_seconds=mailbox.poll_seconds,
        idle=mailbox.idle,
        tls_ca_file=mailbox.tls_ca_file,
        timeout_seconds=mailbox.timeout_seconds,
        address=mailbox.address,
        auth=mailbox.auth,
        provider=mailbox.provider,
        sasl=mailbox.sasl,
        sharing=mailbox.sharing,
        source=MailboxSource.DATABASE,
    )


def _apply(
    session: Session,
    mailbox: Mailbox,
    fields: MailboxFields,
    *,
    password: str | None,
    box: SecretBox | None,
    providers: Mapping[str, OAuthProviderSettings],
    now: datetime,
) -> None:
    keeps_password = (
        password is None
        and fields.auth is MailboxAuth.PASSWORD
        and mailbox.auth is MailboxAuth.PASSWORD
        and mailbox.password_encrypted is not None
    )
    owner = _owner(session, fields.owner)
    address = normalize_email(fields.address) if fields.address else None
    if fields.address and address is None:
        raise DomainError(f"address {fields.address!r} is not an email address")
    candidate = MailboxSettings(
        name=fields.name.strip(),
        host=fields.host.strip(),
        username=fields.username.strip(),
        # the rules only look at whether there is a password
        password=Secret("kept" if keeps_password else (password or ""), "form"),
        port=fields.port,
        security=fields.security,
        folders=tuple(f for f in fields.folders if f.strip()),
        owner=owner.email if owner is not None else None,
        poll_seconds=fields.poll_seconds,
        idle=fields.idle,
        tls_ca_file=fields.tls_ca_file or None,
        timeout_seconds=fields.timeout_seconds,
        address=address,
        auth=fields.auth,
        provider=fields.provider or None,
        sasl=fields.sasl,
        sharing=fields.sharing,
        source=MailboxSource.DATABASE,
    )
    try:
        validate_mailbox(candidate, providers)
    except MailboxSettingsError as exc:
        field_name = "password" if exc.key == "password_env" else exc.key
        raise DomainError(f"mailbox {candidate.name!r}: {field_name}: {exc.problem}") from None
    if fields.timeout_seconds < 1:
        raise DomainError(f"mailbox {candidate.name!r}: timeout_seconds: must be at least 1")
    mailbox.name = candidate.name
    mailbox.host = candidate.host
    mailbox.username = candidate.username
    mailbox.port = candidate.port
    mailbox.security = candidate.security
    mailbox.auth = candidate.auth
    mailbox.provider = candidate.provider
    mailbox.sasl = candidate.sasl
    mailbox.folders = list(candidate.folders)
    mailbox.owner = owner
    mailbox.address = candidate.address
    mailbox.poll_seconds = candidate.poll_seconds
    mailbox.idle = candidate.idle
    mailbox.tls_ca_file = candidate.tls_ca_file
    mailbox.timeout_seconds = candidate.timeout_seconds
    mailbox.sharing = candidate.sharing
    mailbox.updated_at = now
    if candidate.auth is not MailboxAuth.PASSWORD:
        mailbox.password_encrypted = None
    elif password is not None:
        mailbox.password_encrypted = require_box(box, "store a mailbox password").encrypt(password)


def _owner(session: Session, email: str | None) -> User | None:
    if not email:
        return None
    address = normalize_email(email)
    user = session.scalar(select(User).where(User.email == address)) if address else None
    if user is None:
        raise DomainError(f"owner {email!r} is not a Threadline user")
    return user


def _get(session: Session, name: str) -> Mailbox:
    mailbox = session.scalar(select(Mailbox).where(Mailbox.name == name, Mailbox.removed_at.is_(None)))
    if mailbox is None:
        raise NotFoundError(f"no mailbox named {name!r} in the database")
    return mailbox


# ---- OAuth grants -------------------------------------------------------------------------------------


def find_grant(session: Session, mailbox: str, *, for_update: bool = False) -> OAuthGrant | None:
    """The mailbox's grant; for_update locks the row (PostgreSQL) so one process refreshes at a time."""
    query = select(OAuthGrant).where(OAuthGrant.mailbox == mailbox)
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def store_grant(
    session: Session,
    mailbox: str,
    *,
    provider: str,
    flow: GrantFlow,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime,
    scopes: Sequence[str],
    box: SecretBox | None,
    now: datetime,
    granted_by: User | None = None,
) -> OAuthGrant:
    """Record a new grant for the mailbox, replacing any earlier one (a reconnect clears reconnect_needed)."""
    secret = require_box(box, "store an OAuth grant")
    grant = find_grant(session, mailbox, for_update=True)
    if grant is None:
        grant = OAuthGrant(mailbox=mailbox)
        session.add(grant)
    grant.provider = provider
    grant.flow = flow
    grant.scopes = " ".join(scopes)
    grant.refresh_token_encrypted = secret.encrypt(refresh_token) if refresh_token else None
    grant.access_token_encrypted = secret.encrypt(access_token)
    grant.access_token_expires_at = expires_at
    grant.state = GrantState.ACTIVE
    grant.reconnect_reason = None
    grant.reconnect_needed_at = None
    grant.granted_at = now
    grant.granted_by = granted_by
    grant.refreshed_at = None
    grant.updated_at = now
    # a mailbox backing off after a refused sign-in syncs at once with the new grant
    session.execute(
        update(MailboxStatus)
        .where(MailboxStatus.mailbox == mailbox)
        .values(next_attempt_at=None, consecutive_failures=0)
    )
    session.flush()
    return grant


def update_grant_tokens(
    session: Session,
    grant: OAuthGrant,
    *,
    access_token: str,
    refresh_token: str | None,
    expires_at: datetime,
    scopes: Sequence[str] = (),
    box: SecretBox | None,
    now: datetime,
) -> None:
    """After a refresh (or a new app-only token): the new access token, and the new refresh token when the
    provider rotated it (Microsoft does, Google does not: a missing one keeps the stored one)."""
    secret = require_box(box, "store an OAuth token")
    grant.access_token_encrypted = secret.encrypt(access_token)
    grant.access_token_expires_at = expires_at
    if refresh_token:
        grant.refresh_token_encrypted = secret.encrypt(refresh_token)
    if scopes:
        grant.scopes = " ".join(scopes)
    grant.refreshed_at = now
    grant.updated_at = now


def grant_versions(session: Session) -> dict[str, datetime]:
    """When each mailbox's grant was made: a mailbox connected again has a newer one (the daemon restarts
    its sync then)."""
    return {name: at for name, at in session.execute(select(OAuthGrant.mailbox, OAuthGrant.granted_at))}


def grant_access_token(grant: OAuthGrant, box: SecretBox | None) -> str | None:
    if grant.access_token_encrypted is None:
        return None
    return require_box(box, "read an OAuth token").decrypt(grant.access_token_encrypted)


def grant_refresh_token(grant: OAuthGrant, box: SecretBox | None) -> str | None:
    if grant.refresh_token_encrypted is None:
        return None
    return require_box(box, "read an OAuth token").decrypt(grant.refresh_token_encrypted)


def forget_access_token(session: Session, mailbox: str, *, now: datetime) -> None:
    """The mail server refused the cached access token: the next sign-in gets a fresh one."""
    grant = find_grant(session, mailbox)
    if grant is not None and grant.access_token_encrypted is not None:
        grant.access_token_encrypted = None
        grant.access_token_expires_at = None
        grant.updated_at = now


def mark_reconnect_needed(
    session: Session, mailbox: str, *, reason: str, now: datetime, owner: str | None = None
) -> OAuthGrant | None:
    """The provider refused the grant (invalid_grant, consent revoked): its tokens are dropped and the state
    says why and since when. The first time, the mailbox's owner (a user's email; a stored mailbox's own
    owner otherwise) and the admins are notified. Marking it again keeps the first time and notifies no one.
    None when the mailbox has no grant."""
    grant = find_grant(session, mailbox)
    if grant is None:
        return None
    if grant.state is not GrantState.RECONNECT_NEEDED:
        grant.state = GrantState.RECONNECT_NEEDED
        grant.reconnect_needed_at = now
        notify_reconnect_needed(
            session, mailbox, owner_id=_owner_id(session, mailbox, owner), since=now, reason=reason, now=now
        )
    grant.reconnect_reason = reason[:1000]
    grant.refresh_token_encrypted = None
    grant.access_token_encrypted = None
    grant.access_token_expires_at = None
    grant.updated_at = now
    return grant


def _owner_id(session: Session, mailbox: str, owner: str | None) -> int | None:
    if owner:
        return session.scalar(select(User.id).where(User.email == normalize_email(owner)))
    return session.scalar(select(Mailbox.owner_id).where(Mailbox.name == mailbox))


def delete_grant(session: Session, mailbox: str, *, box: SecretBox | None) -> str | None:
    """Forget the mailbox's grant (disconnect). Returns its refresh token, in memory only, so the caller can
    revoke it at the provider; None when there was none (or no key to read it)."""
    grant = find_grant(session, mailbox)
    if grant is None:
        return None
    token: str | None = None
    if box is not None and grant.refresh_token_encrypted is not None:
        token = box.decrypt(grant.refresh_token_encrypted)
    session.delete(grant)
    session.flush()
    return token


# ---- what the panel and the CLI show about each mailbox -----------------------------------------------


class MailboxState(enum.StrEnum):
    OK = "ok"
    NOT_SYNCED_YET = "not synced yet"
    PAUSED = "paused"
    NOT_CONNECTED = "not connected"
    RECONNECT_NEEDED = "reconnect needed"
    ERROR = "error"


@dataclass(frozen=True)
class MailboxOverview:
    """One mailbox as people see it: where it is defined, how it signs in, and how its sync goes."""

    settings: MailboxSettings
    state: MailboxState
    paused: bool
    last_success_at: datetime | None
    last_error: str | None
    next_attempt_at: datetime | None
    messages_logged: int
    connected: bool = False  # has an OAuth grant
    reconnect_reason: str | None = None
    reconnect_needed_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def read_only(self) -> bool:
        """Defined in the config file: shown, but changed only there."""
        return self.settings.source is MailboxSource.CONFIG


def mailbox_overview(
    session: Session,
    config_mailboxes: Sequence[MailboxSettings],
    *,
    box: SecretBox | None,
    owner: str | None = None,
) -> list[MailboxOverview]:
    """Every mailbox (config file and database, paused ones too) with its state; only `owner`'s (a user's
    email) when given."""
    mailboxes = effective_mailboxes(session, config_mailboxes, box=box, include_paused=True)
    if owner is not None:
        mailboxes = tuple(m for m in mailboxes if m.owner == owner)
    names = [m.name for m in mailboxes]
    grants = {g.mailbox: g for g in session.scalars(select(OAuthGrant).where(OAuthGrant.mailbox.in_(names)))}
    statuses = {
        s.mailbox: s for s in session.scalars(select(MailboxStatus).where(MailboxStatus.mailbox.in_(names)))
    }
    logged = {
        name: int(count or 0)
        for name, count in session.execute(
            select(FolderSyncState.mailbox, func.sum(FolderSyncState.messages_logged))
            .where(FolderSyncState.mailbox.in_(names))
            .group_by(FolderSyncState.mailbox)
        )
    }
    paused = set(
        session.scalars(select(Mailbox.name).where(Mailbox.paused_at.is_not(None), Mailbox.name.in_(names)))
    )
    result = []
    for mailbox in mailboxes:
        grant, status = grants.get(mailbox.name), statuses.get(mailbox.name)
        if mailbox.name in paused:
            state = MailboxState.PAUSED
        elif grant is not None and grant.state is GrantState.RECONNECT_NEEDED:
            state = MailboxState.RECONNECT_NEEDED
        elif mailbox.auth is MailboxAuth.OAUTH and grant is None:
            state = MailboxState.NOT_CONNECTED
        elif status is not None and status.last_error:
            state = MailboxState.ERROR
        elif status is not None and status.last_success_at is not None:
            state = MailboxState.OK
        else:
            state = MailboxState.NOT_SYNCED_YET
        reconnecting = grant is not None and grant.state is GrantState.RECONNECT_NEEDED
        result.append(
            MailboxOverview(
                settings=mailbox,
                state=state,
                paused=mailbox.name in paused,
                last_success_at=status.last_success_at if status else None,
                last_error=status.last_error if status else None,
                next_attempt_at=status.next_attempt_at if status else None,
                messages_logged=logged.get(mailbox.name, 0),
                connected=grant is not None,
                reconnect_reason=grant.reconnect_reason if grant is not None and reconnecting else None,
                reconnect_needed_at=grant.reconnect_needed_at if grant is not None and reconnecting else None,
            )
        )
    return result


@dataclass(frozen=True)
class ReconnectNeeded:
    mailbox: str
    reason: str | None
    since: datetime | None


def reconnect_needed_of(
    session: Session, owner: User, config_mailboxes: Sequence[MailboxSettings]
) -> list[ReconnectNeeded]:
    """The owner's mailboxes (stored ones they own, config-file ones naming them) whose grant was refused.
    One indexed query: it runs on every page the owner opens."""
    mine = {m.name for m in config_mailboxes if m.owner == owner.email}
    stored = select(Mailbox.name).where(Mailbox.owner_id == owner.id, Mailbox.removed_at.is_(None))
    rows = session.execute(
        select(OAuthGrant.mailbox, OAuthGrant.reconnect_reason, OAuthGrant.reconnect_needed_at)
        .where(
            OAuthGrant.state == GrantState.RECONNECT_NEEDED,
            OAuthGrant.mailbox.in_(stored) | OAuthGrant.mailbox.in_(sorted(mine)),
        )
        .order_by(OAuthGrant.mailbox)
    )
    return [ReconnectNeeded(name, reason, since) for name, reason, since in rows]
