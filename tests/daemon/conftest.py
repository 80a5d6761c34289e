"""Sync test helpers: messages built with the stdlib, mailboxes on the Dovecot fixture, settings, and a
pool of parser processes shared by the tests (starting processes for every sync would double the suite's
time)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest

from daemon.matching import Team
from daemon.workers import ParserPool
from settings import MailboxSettings, MatchingSettings, Secret, Settings, TeamSettings
from tests.fixtures.dovecot import *  # noqa: F403
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW

TEAM_DOMAIN = "team.example"


def build_message(
    *,
    from_: str,
    to: str | Sequence[str] = (),
    cc: str | Sequence[str] = (),
    bcc: str | Sequence[str] = (),
    subject: str = "Hello",
    body: str = "Hi there,\nabout our project.\n",
    message_id: str | bool | None = True,
    date: datetime | None = NOW,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    headers: dict[str, str] | None = None,
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> bytes:
    """A message as bytes; message_id=True makes a fresh one, None/False leaves it out."""
    msg = EmailMessage()
    msg["From"] = from_
    for name, value in (("To", to), ("Cc", cc), ("Bcc", bcc)):
        values = [value] if isinstance(value, str) else list(value)
        if values:
            msg[name] = ", ".join(values)
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    if message_id is True:
        msg["Message-ID"] = make_msgid(domain="mail.test")
    elif isinstance(message_id, str):
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(msg)


def message_id_of(raw: bytes) -> str:
    for line in raw.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")


MakeMailbox = Callable[..., MailboxSettings]


@pytest.fixture
def make_mailbox(dovecot: DovecotServer, mailbox_user: Callable[[], tuple[str, str]]) -> MakeMailbox:
    """Factory: a fresh Dovecot user as a [[mailboxes]] entry (plain IMAP on loopback unless told)."""

    def make(
        name: str | None = None,
        *,
        owner: str | None = None,
        address: str | None = None,
        folders: Sequence[str] = (),
        security: str = "none",
        port: int | None = None,
        tls_ca_file: str | None = None,
        password: str | None = None,
    ) -> MailboxSettings:
        username, real_password = mailbox_user()
        return MailboxSettings(
            name=name or username,
            host=dovecot.host,
            username=username,
            password=Secret(password or real_password, "test"),
            port=port or dovecot.port,
            security=security,
            folders=tuple(folders),
            owner=owner,
            address=address,
            tls_ca_file=tls_ca_file,
            timeout_seconds=10.0,
        )

    return make


def make_settings(
    *mailboxes: MailboxSettings,
    domains: Sequence[str] = (TEAM_DOMAIN,),
    db_url: str = "sqlite://",
    **matching: object,
) -> Settings:
    from settings import DatabaseSettings

    return Settings(
        source="test",
        database=DatabaseSettings(url=db_url),
        team=TeamSettings(domains=tuple(domains)),
        matching=MatchingSettings(**matching),  # type: ignore[arg-type]
        mailboxes=tuple(mailboxes),
    )


def team_of(settings: Settings) -> Team:
    return Team.of(settings.team, settings.mailboxes)


ParserFor = Callable[[MatchingSettings], ParserPool]


@pytest.fixture(scope="session")
def parser_for() -> Iterator[ParserFor]:
    """Factory: a parser pool for these [matching] settings, shared by every test that uses the same ones."""
    pools: dict[MatchingSettings, ParserPool] = {}

    def get(matching: MatchingSettings) -> ParserPool:
        if matching not in pools:
            pools[matching] = ParserPool(matching, workers=2)
        return pools[matching]

    yield get
    for pool in pools.values():
        pool.close()


def delivery_failure(
    failed: str, *, original_id: str = "<sent-1@team.example>", to: str = "jane@team.example"
) -> bytes:
    """A delivery status report (RFC 3464) from the team's mail server: mail to `failed` was not delivered."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.team.example>\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Mon, 23 Nov 2026 08:00:00 +0000\r\n"
        f"Message-ID: <dsn-{failed.replace('@', '.')}@mx.team.example>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="DSN"\r\n\r\n'
        "--DSN\r\nContent-Type: text/plain\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not be delivered to {failed}.\r\n\r\n"
        "--DSN\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.team.example\r\n\r\n"
        f"Final-Recipient: rfc822; {failed}\r\nOriginal-Recipient: rfc822;{failed}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--DSN\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: jane@team.example\r\nTo: {failed}\r\nSubject: Offer\r\nMessage-ID: {original_id}\r\n\r\n"
        "--DSN--\r\n"
    ).encode()
