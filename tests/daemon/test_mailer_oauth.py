"""Alert digests over OAuth SMTP: SASL XOAUTH2 with the access token of `[smtp] oauth_mailbox`'s grant,
against a real aiosmtpd that checks every token at the local authorization server (introspection)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from daemon.alerts import retry_unsent
from daemon.credentials import MailboxCredentials
from daemon.mailer import Letter, Mailer
from daemon.oauth import OAuthClient
from models.db import transaction
from models.notifications import notify_reconnect_needed
from models.schema import GrantFlow, Notification, Role
from models.secrets import SecretBox, generate_key
from models.users import create_user
from settings import (
    AlertSettings,
    MailboxAuth,
    MailboxSettings,
    Secret,
    SecretsSettings,
    Settings,
    SmtpSettings,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings
from tests.fixtures.smtp import SmtpServer

REDIRECT = "http://localhost/callback"
KEY = generate_key()


@pytest.fixture
def oauth_smtp(oauth_server: OAuthTestServer) -> Iterator[SmtpServer]:
    def check(token: str) -> str | None:
        answer = oauth_server.introspect(token)
        return str(answer["username"]) if answer.get("active") else None

    server = SmtpServer(check_token=check)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connected(sqlite_db: TestDatabase, oauth_server: OAuthTestServer, oauth_smtp: SmtpServer):  # type: ignore[no-untyped-def]
    """(settings, credentials, user): the config file's OAuth mailbox 'sales', connected, used for SMTP."""
    user = f"sales-{secrets.token_hex(3)}"
    oauth_server.add_user(user)
    client = oauth_server.add_client(
        secret="s3cret", redirect_uris=(REDIRECT,), grant_types=("authorization_code", "refresh_token")
    )
    provider = provider_settings(oauth_server, client)
    mailbox = MailboxSettings(
        name="sales", host="127.0.0.1", username=user, auth=MailboxAuth.OAUTH, provider="local",
        security="none",
    )  # fmt: skip
    settings = Settings(
        source="test",
        mailboxes=(mailbox,),
        oauth={"local": provider},
        secrets=SecretsSettings(key=Secret(KEY, "test")),
        alerts=AlertSettings(enabled=True),
        smtp=SmtpSettings(
            host=oauth_smtp.host, port=oauth_smtp.port, security="none", oauth_mailbox="sales",
            from_address=f"Threadline <{user}@team.example>", timeout_seconds=5,
        ),
    )  # fmt: skip
    credentials = MailboxCredentials(sqlite_db.sessions, box=SecretBox([KEY]), providers=settings.oauth)
    flows = OAuthClient(provider)
    request = flows.begin_authorization(REDIRECT)
    credentials.store(
        mailbox,
        GrantFlow.AUTHORIZATION_CODE,
        flows.finish_authorization(request, oauth_server.approve(request.url, user)),
    )
    return settings, credentials, user


def letter() -> Letter:
    return Letter(to_address="ann@team.example", to_name="Ann", subject="Threadline: 1 mailbox", text="Hi")


def test_a_digest_goes_out_signed_in_with_xoauth2(connected, oauth_smtp) -> None:
    settings, credentials, user = connected
    tokens = credentials.token_source(settings.mailboxes[0])
    with Mailer(settings.smtp, tokens=tokens, oauth_username=user) as mailer:
        delivery = mailer.send(letter(), now=datetime.now(UTC))
    assert delivery.ok, delivery.error
    assert oauth_smtp.logins == [user]
    assert oauth_smtp.wait_for(1)[0].rcpt_tos == ("ann@team.example",)


def test_a_token_the_server_refuses_is_renewed_once_and_the_digest_still_goes(
    connected, oauth_smtp, oauth_server
) -> None:
    settings, credentials, user = connected
    oauth_server.expire_access_tokens(user)  # revoked early: the cached token still looks fresh to us
    asked = len(oauth_server.grants)
    tokens = credentials.token_source(settings.mailboxes[0])
    with Mailer(settings.smtp, tokens=tokens, oauth_username=user) as mailer:
        delivery = mailer.send(letter(), now=datetime.now(UTC))
    assert delivery.ok, delivery.error
    assert oauth_smtp.refused_logins == [user] and oauth_smtp.logins == [user]
    assert oauth_server.grants[asked:] == ["refresh_token"]
    assert len(oauth_smtp.wait_for(1)) == 1


def test_the_alert_run_sends_over_oauth_and_a_revoked_grant_keeps_the_notifications_unsent(
    sqlite_db, connected, oauth_smtp, oauth_server
) -> None:
    settings, _credentials, user = connected
    now = datetime.now(UTC)
    with transaction(sqlite_db.sessions) as session:
        admin = create_user(
            session, "ann@team.example", name="Ann", role=Role.ADMIN, password="x" * 12, now=now
        )
        notify_reconnect_needed(
            session, "jane", owner_id=admin.id, since=now, reason="invalid_grant", now=now
        )
    result = retry_unsent(settings, sqlite_db.sessions, now=now)
    assert result.digests_sent == 1, result.errors
    [mail] = oauth_smtp.wait_for(1)
    assert "Mailboxes to reconnect" in mail.text and "Mailbox jane" in mail.text
    assert oauth_smtp.logins == [user]

    oauth_server.revoke_user(user)
    with transaction(sqlite_db.sessions) as session:
        notify_reconnect_needed(session, "lee", owner_id=admin.id, since=now, reason="invalid_grant", now=now)
    failed = retry_unsent(replace(settings), sqlite_db.sessions, now=now)
    assert failed.digests_sent == 0 and failed.digests_failed == 1
    assert "needs reconnecting" in failed.errors[0] and "Bearer" not in failed.errors[0]
    with sqlite_db.sessions() as session:
        unsent = session.scalars(select(Notification.title).where(Notification.sent_at.is_(None))).all()
    # the digest waits; the refused grant is itself reported to the admin, for the next digest
    assert sorted(unsent) == ["Mailbox lee needs reconnecting", "Mailbox sales needs reconnecting"]
