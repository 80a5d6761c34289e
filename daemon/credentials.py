"""How a mailbox signs in: its password, or an OAuth access token kept fresh from its stored grant.

`MailboxCredentials.imap_target(mailbox)` is what the sync connects with. For a password mailbox it is the
plain target; for an OAuth one (auth 'oauth' or 'app') it carries a token source that:
- hands out the cached access token (stored encrypted in the grant) while it has more than `refresh_margin`
  left, so every process and every poll shares one token instead of refreshing each time;
- refreshes it before it expires (refresh token for 'oauth', client credentials for 'app') and stores the new
  tokens (a rotated refresh token replaces the old one);
- when the server refuses a token anyway (revoked early, or expired on a clock that differs), forgets it so
  the login is retried once with a fresh one;
- when the provider refuses the grant itself (`invalid_grant`, consent withdrawn), records "reconnect needed"
  with the reason and the time on the grant and fails the login with `ReconnectNeededError`, an
  ImapAuthError: the sync backs off as for a wrong password, and later polls fail at once from the stored
  state without asking the provider again. Connecting the mailbox again (a new grant) clears it.

Refreshes of one mailbox are serialized within the process. Between processes the grant is re-read before
writing: a refresh refused because another process had just rotated the refresh token is retried with the
new one instead of being taken for a revoked grant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import ImapAuthError, ImapError, ImapTarget, OAuthLogin
from daemon.oauth import ClientRejectedError, GrantRefusedError, OAuthClient, OAuthError, TokenSet
from models.db import transaction
from models.mailboxes import (
    find_grant,
    forget_access_token,
    grant_access_token,
    grant_refresh_token,
    mark_reconnect_needed,
    store_grant,
    update_grant_tokens,
)
from models.schema import GrantFlow, GrantState
from models.secrets import SecretBox
from settings.model import MailboxAuth, MailboxSettings, OAuthProviderSettings

__all__ = ["MailboxCredentials", "NotConnectedError", "ReconnectNeededError", "mailbox_sasl"]

log = logging.getLogger(__name__)

DEFAULT_REFRESH_MARGIN = timedelta(minutes=5)


class ReconnectNeededError(ImapAuthError):
    """The mailbox's OAuth grant was refused by its provider: a person must connect it again."""

    def __init__(self, message: str, *, mailbox: str, reason: str, since: datetime | None) -> None:
        super().__init__(message)
        self.mailbox = mailbox
        self.reason = reason
        self.since = since


class NotConnectedError(ImapAuthError):
    """An OAuth mailbox that was never connected (no grant yet)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def mailbox_sasl(mailbox: MailboxSettings, provider: OAuthProviderSettings) -> str:
    """The SASL mechanism for a mailbox: its own setting, else its provider's."""
    return (mailbox.sasl or provider.sasl).value


class MailboxCredentials:
    """Sign-in material for mailboxes; one per process (it serializes refreshes per mailbox)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        box: SecretBox | None,
        providers: Mapping[str, OAuthProviderSettings],
        now_fn: Callable[[], datetime] = utcnow,
        refresh_margin: timedelta = DEFAULT_REFRESH_MARGIN,
        client_factory: Callable[[OAuthProviderSettings], OAuthClient] | None = None,
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.providers = providers
        self.now_fn = now_fn
        self.refresh_margin = refresh_margin
        self._client_factory = client_factory or (lambda provider: OAuthClient(provider, now_fn=now_fn))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def __repr__(self) -> str:
        return f"<MailboxCredentials {len(self.providers)} provider(s)>"

    # -- what the sync uses --------------------------------------------------------------------------------

    def imap_target(self, mailbox: MailboxSettings) -> ImapTarget:
        oauth = None
        if mailbox.uses_oauth:
            provider = self.provider(mailbox)
            oauth = OAuthLogin(mechanism=mailbox_sasl(mailbox, provider), tokens=_TokenSource(self, mailbox))
        return ImapTarget(
            host=mailbox.host,
            port=mailbox.port,
            security=mailbox.security,
            username=mailbox.username,
            password=mailbox.password.reveal() if not mailbox.uses_oauth else "",
            timeout=mailbox.timeout_seconds,
            ca_file=mailbox.tls_ca_file,
            oauth=oauth,
        )

    def token_source(self, mailbox: MailboxSettings) -> _TokenSource:
        """The mailbox's access tokens for another sign-in (SMTP XOAUTH2 for the alert digests)."""
        return _TokenSource(self, mailbox)

    def provider(self, mailbox: MailboxSettings) -> OAuthProviderSettings:
        provider = self.providers.get(mailbox.provider or "")
        if provider is None:
            raise ImapAuthError(
                f"mailbox {mailbox.name!r}: no OAuth provider {mailbox.provider!r} in [oauth]"
            )
        return provider

    def client(self, provider: OAuthProviderSettings) -> OAuthClient:
        return self._client_factory(provider)

    # -- access tokens -------------------------------------------------------------------------------------

    def access_token(self, mailbox: MailboxSettings) -> str:
        """A usable access token for the mailbox, refreshed first when it is about to expire.

        Raises ReconnectNeededError / NotConnectedError (no point retrying until someone connects it),
        ImapAuthError when the provider refuses Threadline's client, ImapError for passing trouble.
        """
        provider = self.provider(mailbox)
        with self._lock(mailbox.name):
            for _attempt in range(3):
                snapshot = self._read(mailbox)
                if snapshot.access_token is not None:
                    return snapshot.access_token
                token = self._renew(mailbox, provider, snapshot)
                if token is not None:
                    return token
            raise ImapError(f"mailbox {mailbox.name!r}: the grant keeps changing under us; will retry")

    def store(self, mailbox: MailboxSettings, flow: GrantFlow, tokens: TokenSet) -> None:
        """Record a new grant for the mailbox (after a connect flow); clears any reconnect-needed state."""
        with transaction(self.sessions) as session:
            store_grant(
                session,
                mailbox.name,
                provider=mailbox.provider or "",
                flow=flow,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=tokens.expires_at,
                scopes=tokens.scopes,
                box=self.box,
                now=self.now_fn(),
            )

    def rejected(self, mailbox: MailboxSettings, token: str) -> None:
        """The mail server refused this token: drop it from the cache (if it is still the cached one)."""
        with self._lock(mailbox.name), transaction(self.sessions) as session:
            grant = find_grant(session, mailbox.name)
            if grant is not None and grant_access_token(grant, self.box) == token:
                forget_access_token(session, mailbox.name, now=self.now_fn())
                log.info(
                    "%s: the mail server refused the access token; a fresh one will be used", mailbox.name
                )

    # -- plumbing ----------------------------------------------------------------------------------------

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def _read(self, mailbox: MailboxSettings) -> _Snapshot:
        """The grant as stored; access_token is set only when it has more than refresh_margin left."""
        with self.sessions() as session:
            grant = find_grant(session, mailbox.name)
            if grant is None:
                if mailbox.auth is MailboxAuth.APP:
                    return _Snapshot(exists=False)
                raise NotConnectedError(
                    f"mailbox {mailbox.name!r} is not connected to {mailbox.provider}: "
                    f"run `threadline mailbox connect {mailbox.name}`"
                )
            if grant.state is GrantState.RECONNECT_NEEDED:
                raise self._reconnect_error(
                    mailbox, grant.reconnect_reason or "refused", grant.reconnect_needed_at
                )
            if grant.provider != mailbox.provider:
                raise ReconnectNeededError(
                    f"mailbox {mailbox.name!r} was connected through {grant.provider}, now configured for "
                    f"{mailbox.provider}: connect it again",
                    mailbox=mailbox.name,
                    reason="provider changed",
                    since=None,
                )
            expires_at = grant.access_token_expires_at
            fresh = expires_at is not None and expires_at - self.refresh_margin > self.now_fn()
            return _Snapshot(
                exists=True,
                flow=grant.flow,
                access_token=grant_access_token(grant, self.box) if fresh else None,
                refresh_token_encrypted=grant.refresh_token_encrypted,
                refresh_token=grant_refresh_token(grant, self.box),
            )

    def _renew(
        self, mailbox: MailboxSettings, provider: OAuthProviderSettings, snapshot: _Snapshot
    ) -> str | None:
        """Get and store new tokens: the new access token, or None when another process changed the grant
        meanwhile (read it again)."""
        client = self.client(provider)
        try:
            if mailbox.auth is MailboxAuth.APP:
                tokens = client.client_credentials()
            else:
                if snapshot.refresh_token is None:
                    raise GrantRefusedError(f"{provider.name}: no refresh token stored", "no refresh token")
                public = snapshot.flow is GrantFlow.DEVICE_CODE and client.device_flow_is_public
                tokens = client.refresh(snapshot.refresh_token, public=public)
        except GrantRefusedError as exc:
            self._refused(mailbox, snapshot, exc)
            return None
        except ClientRejectedError as exc:
            raise ImapAuthError(f"mailbox {mailbox.name!r}: {exc}; check [oauth.{provider.name}]") from exc
        except OAuthError as exc:
            raise ImapError(f"mailbox {mailbox.name!r}: cannot get an access token: {exc}") from exc
        now = self.now_fn()
        with transaction(self.sessions) as session:
            grant = find_grant(session, mailbox.name, for_update=True)
            if grant is None:
                if mailbox.auth is not MailboxAuth.APP:
                    return None  # disconnected meanwhile: _read says so
                store_grant(
                    session,
                    mailbox.name,
                    provider=provider.name,
                    flow=GrantFlow.CLIENT_CREDENTIALS,
                    access_token=tokens.access_token,
                    refresh_token=None,
                    expires_at=tokens.expires_at,
                    scopes=tokens.scopes or provider.app_scopes,
                    box=self.box,
                    now=now,
                )
            else:
                unchanged = grant.refresh_token_encrypted == snapshot.refresh_token_encrypted
                update_grant_tokens(
                    session,
                    grant,
                    access_token=tokens.access_token,
                    refresh_token=tokens.refresh_token if unchanged else None,
                    expires_at=tokens.expires_at,
                    scopes=tokens.scopes,
                    box=self.box,
                    now=now,
                )
        log.info("%s: access token renewed, valid until %s", mailbox.name, tokens.expires_at.isoformat())
        return tokens.access_token

    def _refused(self, mailbox: MailboxSettings, snapshot: _Snapshot, exc: GrantRefusedError) -> None:
        now = self.now_fn()
        with transaction(self.sessions) as session:
            grant = find_grant(session, mailbox.name, for_update=True)
            if grant is not None and grant.refresh_token_encrypted != snapshot.refresh_token_encrypted:
                return None  # another process renewed or reconnected it meanwhile: use what it stored
            marked = mark_reconnect_needed(
                session, mailbox.name, reason=exc.reason, now=now, owner=mailbox.owner
            )
            since = marked.reconnect_needed_at if marked is not None else now
        log.warning("%s: the provider refused the grant (%s): reconnect needed", mailbox.name, exc.reason)
        raise self._reconnect_error(mailbox, exc.reason, since) from exc

    @staticmethod
    def _reconnect_error(
        mailbox: MailboxSettings, reason: str, since: datetime | None
    ) -> ReconnectNeededError:
        when = f" since {since.isoformat(timespec='minutes')}" if since else ""
        return ReconnectNeededError(
            f"mailbox {mailbox.name!r} needs reconnecting{when}: {mailbox.provider} refused the grant "
            f"({reason}); run `threadline mailbox connect {mailbox.name}`",
            mailbox=mailbox.name,
            reason=reason,
            since=since,
        )


@dataclass(frozen=True)
class _Snapshot:
    exists: bool
    flow: GrantFlow | None = None
    access_token: str | None = None
    refresh_token_encrypted: str | None = None
    refresh_token: str | None = None

    def __repr__(self) -> str:
        return f"_Snapshot(exists={self.exists}, flow={self.flow})"


class _TokenSource:
    """The daemon.imap TokenSource of one mailbox."""

    def __init__(self, credentials: MailboxCredentials, mailbox: MailboxSettings) -> None:
        self._credentials = credentials
        self._mailbox = mailbox

    def __repr__(self) -> str:
        return f"<token source for {self._mailbox.name}>"

    def access_token(self) -> str:
        return self._credentials.access_token(self._mailbox)

    def rejected(self, token: str) -> None:
        self._credentials.rejected(self._mailbox, token)
