"""The `threadline mailbox ...` and `threadline secrets ...` commands: listing, connecting and disconnecting
mailboxes, and the encryption key's life cycle. Wiring and printing only; the work is in daemon/ and models/.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from daemon.credentials import MailboxCredentials
from daemon.imap import ImapAuthError, ImapError, ImapSession
from daemon.oauth import AuthorizationRequest, OAuthClient, OAuthError, TokenSet
from models.db import transaction
from models.errors import DomainError
from models.mailboxes import MailboxOverview, MailboxState, delete_grant, mailbox_overview
from models.schema import GrantFlow, OAuthGrant
from models.secrets import SecretBox, generate_key, require_box, rotate_stored_secrets
from settings.model import MailboxAuth, MailboxSettings, OAuthProviderSettings, Settings

# Where the CLI's browser flow sends the user back to when [oauth.NAME] redirect_uri is not set. Nothing
# listens there: the page fails to load and the user copies its address back into the terminal. Google
# "Desktop app" clients and Microsoft "Web" redirect URIs accept http://localhost.
DEFAULT_CLI_REDIRECT_URI = "http://localhost/"


class ConnectError(Exception):
    """Connecting failed for a reason the user can act on (printed as one line, exit 1)."""


@dataclass(frozen=True)
class MailboxRow:
    name: str
    source: str
    auth: str
    provider: str
    state: str


def mailbox_rows(
    settings: Settings, sessions: sessionmaker[Session], box: SecretBox | None, now: datetime
) -> list[MailboxRow]:
    """Every mailbox (config file and database, paused ones too) with how it signs in and its state (the
    states are models.mailboxes.mailbox_overview's, worded for a terminal)."""
    with sessions() as session:
        overview = mailbox_overview(session, settings.mailboxes, box=box)
    return [
        MailboxRow(
            name=item.name,
            source=item.settings.source.value,
            auth=item.settings.auth.value,
            provider=item.settings.provider or "",
            state=_state_line(item),
        )
        for item in overview
    ]


def _state_line(item: MailboxOverview) -> str:
    def minute(value: datetime | None) -> str:
        return value.isoformat(timespec="minutes") if value is not None else "?"

    if item.state is MailboxState.PAUSED:
        return "paused"
    if item.state is MailboxState.NOT_CONNECTED:
        return f"not connected: run `threadline mailbox connect {item.name}`"
    if item.state is MailboxState.RECONNECT_NEEDED:
        return f"reconnect needed since {minute(item.reconnect_needed_at)} ({item.reconnect_reason})"
    if item.state is MailboxState.ERROR:
        return f"error: {(item.last_error or '').splitlines()[0][:120]}"
    if item.state is MailboxState.OK:
        return f"ok, last sync {minute(item.last_success_at)}"
    return "connected, not synced yet" if item.connected else "not synced yet"


def connect(
    mailbox: MailboxSettings,
    provider: OAuthProviderSettings,
    credentials: MailboxCredentials,
    *,
    browser: bool,
    out: TextIO,
    read_line: Callable[[], str],
    check: bool = True,
    stop: threading.Event | None = None,
) -> str:
    """Run the right flow for the mailbox, store the grant, then sign in once to prove it works. Returns
    the line to print on success; raises ConnectError otherwise."""
    client = credentials.client(provider)
    try:
        if mailbox.auth is MailboxAuth.APP:
            flow, tokens = GrantFlow.CLIENT_CREDENTIALS, client.client_credentials()
        elif browser or not provider.device_url:
            flow, tokens = (
                GrantFlow.AUTHORIZATION_CODE,
                _browser_flow(mailbox, provider, client, out, read_line),
            )
        else:
            flow, tokens = GrantFlow.DEVICE_CODE, _device_flow(mailbox, client, out, stop)
    except OAuthError as exc:
        raise ConnectError(f"mailbox {mailbox.name!r} not connected: {exc}") from None
    credentials.store(mailbox, flow, tokens)
    if not check:
        return f"mailbox {mailbox.name!r} connected through {provider.name}"
    try:
        with ImapSession(credentials.imap_target(mailbox)):
            pass
    except ImapError as exc:
        raise ConnectError(
            f"mailbox {mailbox.name!r}: the grant is stored, but signing in to IMAP failed: {exc}"
        ) from None
    return (
        f"mailbox {mailbox.name!r} connected through {provider.name}: "
        f"signed in to {mailbox.host} as {mailbox.username}"
    )


def _device_flow(
    mailbox: MailboxSettings, client: OAuthClient, out: TextIO, stop: threading.Event | None
) -> TokenSet:
    device = client.start_device_authorization()
    minutes = max(1, round((device.expires_at - client.now_fn()).total_seconds() / 60))
    print(
        f"To connect mailbox {mailbox.name!r} ({mailbox.username}), open {device.verification_uri}\n"
        f"and enter the code {device.user_code}\n"
        f"Waiting for the sign-in (the code expires in {minutes} minutes; Ctrl-C to stop)...",
        file=out,
        flush=True,
    )
    return client.poll_device_authorization(device, stop=stop)


def _browser_flow(
    mailbox: MailboxSettings,
    provider: OAuthProviderSettings,
    client: OAuthClient,
    out: TextIO,
    read_line: Callable[[], str],
) -> TokenSet:
    request = client.begin_authorization(
        provider.redirect_uri or DEFAULT_CLI_REDIRECT_URI, login_hint=mailbox.username
    )
    print(
        f"To connect mailbox {mailbox.name!r} ({mailbox.username}), open this address in a browser "
        f"and sign in:\n\n{request.url}\n\n"
        f"Your browser is then sent to {request.redirect_uri} "
        "(the page may fail to load: that is expected).\n"
        "Paste the whole address from the browser's address bar here:",
        file=out,
        flush=True,
    )
    answer = read_line().strip()
    if not answer:
        raise ConnectError("no address pasted: nothing connected")
    return client.finish_authorization(request, answer)


def disconnect(mailbox: MailboxSettings, credentials: MailboxCredentials) -> str:
    """Forget the mailbox's grant and revoke its refresh token at the provider when it can."""
    provider = credentials.provider(mailbox)
    with transaction(credentials.sessions) as session:
        grant = session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == mailbox.name))
        if grant is None:
            return f"mailbox {mailbox.name!r} was not connected"
        public = grant.flow is GrantFlow.DEVICE_CODE
        refresh_token = delete_grant(session, mailbox.name, box=credentials.box)
    if refresh_token is None:
        return f"mailbox {mailbox.name!r} disconnected"
    client = credentials.client(provider)
    try:
        revoked = client.revoke(refresh_token, public=public and client.device_flow_is_public)
    except OAuthError as exc:
        return f"mailbox {mailbox.name!r} disconnected (revoking at {provider.name} failed: {exc})"
    how = (
        f"its access revoked at {provider.name}" if revoked else f"{provider.name} has no revocation endpoint"
    )
    return f"mailbox {mailbox.name!r} disconnected, {how}"


def rotate_key(sessions: sessionmaker[Session], box: SecretBox | None) -> int:
    secret_box = require_box(box, "rotate secrets")
    with transaction(sessions) as session:
        return rotate_stored_secrets(session, secret_box)


def print_key(out: TextIO = sys.stdout) -> None:
    print(generate_key(), file=out)


class PanelConnector:
    """The panel's "Connect mailbox" (admin.connect.MailboxConnector): the authorization code grant with PKCE
    through daemon.oauth, the grant stored encrypted through daemon.credentials."""

    def __init__(self, credentials: MailboxCredentials) -> None:
        self.credentials = credentials

    def __repr__(self) -> str:
        return "<PanelConnector>"

    def begin(self, mailbox: MailboxSettings, redirect_uri: str) -> dict[str, str]:
        try:
            client = self.credentials.client(self.credentials.provider(mailbox))
            request = client.begin_authorization(redirect_uri, login_hint=mailbox.username)
        except (OAuthError, ImapAuthError) as exc:
            raise DomainError(str(exc)) from None
        return {
            "url": request.url,
            "state": request.state,
            "verifier": request.code_verifier,
            "redirect_uri": request.redirect_uri,
        }

    def finish(self, mailbox: MailboxSettings, pending: Mapping[str, str], callback_url: str) -> None:
        request = AuthorizationRequest(
            url=pending.get("url", ""),
            state=pending.get("state", ""),
            code_verifier=pending.get("verifier", ""),
            redirect_uri=pending.get("redirect_uri", ""),
        )
        try:
            client = self.credentials.client(self.credentials.provider(mailbox))
            tokens = client.finish_authorization(request, callback_url)
        except (OAuthError, ImapAuthError) as exc:
            raise DomainError(str(exc)) from None
        self.credentials.store(mailbox, GrantFlow.AUTHORIZATION_CODE, tokens)
