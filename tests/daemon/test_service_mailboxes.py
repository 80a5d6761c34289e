"""The running daemon follows the mailbox list: mailboxes added, changed, paused and removed in the database
are picked up without a restart, and OAuth mailboxes sync through their grant (tokens renewed, a refused
grant left alone until someone connects it again). Real Dovecot, the local authorization server, a daemon
running in a thread."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from daemon.credentials import MailboxCredentials
from daemon.oauth import OAuthClient
from daemon.service import Daemon
from models.db import transaction
from models.mailboxes import (
    MailboxFields,
    create_mailbox,
    pause_mailbox,
    remove_mailbox,
    resume_mailbox,
    update_mailbox,
)
from models.schema import Activity, GrantFlow, GrantState, MailboxStatus, OAuthGrant
from models.secrets import SecretBox, generate_key
from settings import MailboxAuth, Secret, SecretsSettings, Settings
from tests.daemon.conftest import TEAM_DOMAIN, build_message, make_settings
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings

REDIRECT = "http://127.0.0.1/callback"
_numbers = itertools.count(1)


class Clock:
    """The daemon's time: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def subjects(db: TestDatabase) -> set[str]:
    with db.sessions() as session:
        return set(session.scalars(select(Activity.subject)))


def mail(user: str, subject: str) -> bytes:
    return build_message(from_="Pat <pat@prospect.example>", to=f"{user}@{TEAM_DOMAIN}", subject=subject)


@pytest.fixture
def run_daemon(sqlite_db: TestDatabase) -> Iterator[Callable[..., Daemon]]:
    started: list[tuple[Daemon, threading.Thread]] = []

    def start(settings: Settings, **options: object) -> Daemon:
        daemon = Daemon(
            settings, sqlite_db.sessions, stop=threading.Event(), with_alerts=False, reload_seconds=0.5,
            **options,  # type: ignore[arg-type]
        )  # fmt: skip
        thread = threading.Thread(target=daemon.run, name="test-daemon")
        thread.start()
        started.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in started:
        daemon.stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the daemon did not stop"


def test_mailboxes_added_changed_paused_and_removed_are_followed_without_a_restart(
    sqlite_db: TestDatabase, dovecot: DovecotServer, mailbox_user, run_daemon
) -> None:
    key = generate_key()
    box = SecretBox([key])
    settings = replace(
        make_settings(create_contacts="sent_and_received"), secrets=SecretsSettings(key=Secret(key, "test"))
    )
    daemon = run_daemon(settings)
    user, password = mailbox_user()
    dovecot.append(user, "INBOX", [mail(user, "Before the mailbox existed")])
    fields = MailboxFields(
        name="jane", host=dovecot.host, port=dovecot.port, security="none", username=user,
        address=f"{user}@{TEAM_DOMAIN}", poll_seconds=1, idle=False, timeout_seconds=10,
    )  # fmt: skip
    now = datetime.now(UTC)

    with transaction(sqlite_db.sessions) as session:
        create_mailbox(session, fields, password=password, box=box, providers={}, now=now)
    wait_for(lambda: "Before the mailbox existed" in subjects(sqlite_db), 20, "the added mailbox to sync")

    with transaction(sqlite_db.sessions) as session:
        update_mailbox(session, "jane", replace(fields, poll_seconds=2), box=box, providers={}, now=now)
    # while it restarts, the mailbox is briefly not running at all
    wait_for(
        lambda: getattr(daemon.running_mailboxes().get("jane"), "poll_seconds", None) == 2,
        10,
        "the change to be picked up",
    )

    with transaction(sqlite_db.sessions) as session:
        pause_mailbox(session, "jane", now=now)
    wait_for(lambda: "jane" not in daemon.running_mailboxes(), 10, "the paused mailbox to stop")
    dovecot.append(user, "INBOX", [mail(user, "While paused")])
    time.sleep(2.5)  # more than two poll intervals: a paused mailbox must not be polled
    assert "While paused" not in subjects(sqlite_db)

    with transaction(sqlite_db.sessions) as session:
        resume_mailbox(session, "jane", now=now)
    wait_for(lambda: "While paused" in subjects(sqlite_db), 20, "the resumed mailbox to catch up")

    with transaction(sqlite_db.sessions) as session:
        remove_mailbox(session, "jane", box=box, now=now)
    wait_for(lambda: "jane" not in daemon.running_mailboxes(), 10, "the removed mailbox to stop")
    dovecot.append(user, "INBOX", [mail(user, "After removal")])
    time.sleep(2.5)
    assert subjects(sqlite_db) == {"Before the mailbox existed", "While paused"}  # kept, nothing new


# ---- OAuth mailboxes ------------------------------------------------------------------------------------


@pytest.fixture
def oauth_mailbox(sqlite_db: TestDatabase, oauth_dovecot: DovecotServer, oauth_server: OAuthTestServer):  # type: ignore[no-untyped-def]
    """(settings, credentials, user, clock): an OAuth mailbox stored in the database and connected through
    the local provider with the authorization code flow, as the panel does."""
    user = f"svc{next(_numbers)}x{int(time.time()) % 100000}"
    oauth_dovecot.add_user(user, "set-up-only-password")
    oauth_server.add_user(user)
    client = oauth_server.add_client(
        secret="s3cret", redirect_uris=(REDIRECT,), grant_types=("authorization_code", "refresh_token")
    )
    provider = provider_settings(oauth_server, client)
    key = generate_key()
    settings = replace(
        make_settings(create_contacts="sent_and_received"),
        secrets=SecretsSettings(key=Secret(key, "test")),
        oauth={"local": provider},
    )
    clock = Clock()
    box = SecretBox([key])
    credentials = MailboxCredentials(sqlite_db.sessions, box=box, providers=settings.oauth, now_fn=clock)
    fields = MailboxFields(
        name="oauth-jane", host=oauth_dovecot.host, port=oauth_dovecot.port, security="none", username=user,
        auth=MailboxAuth.OAUTH, provider="local", address=f"{user}@{TEAM_DOMAIN}", poll_seconds=1,
        idle=False, timeout_seconds=10,
    )  # fmt: skip
    with transaction(sqlite_db.sessions) as session:
        create_mailbox(session, fields, box=box, providers=settings.oauth, now=clock())
    connect(credentials, oauth_server, user)
    return settings, credentials, user, clock


def connect(credentials: MailboxCredentials, oauth_server: OAuthTestServer, user: str) -> None:
    client = OAuthClient(credentials.providers["local"])
    request = client.begin_authorization(REDIRECT)
    tokens = client.finish_authorization(request, oauth_server.approve(request.url, user))
    mailbox = next(m for m in _effective(credentials) if m.name == "oauth-jane")
    credentials.store(mailbox, GrantFlow.AUTHORIZATION_CODE, tokens)


def _effective(credentials: MailboxCredentials):  # type: ignore[no-untyped-def]
    from models.mailboxes import effective_mailboxes

    with credentials.sessions() as session:
        return effective_mailboxes(session, (), box=credentials.box, include_paused=True)


def drop_connections(server: DovecotServer, user: str) -> None:
    """Close the daemon's connections, so its next poll signs in again. (The kick helper also waits until
    the user has no session left, which a running daemon, reconnecting at once, never allows.)"""
    with contextlib.suppress(RuntimeError):
        server.kick(user)


def grant_of(db: TestDatabase) -> OAuthGrant:
    with db.sessions() as session:
        grant = session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == "oauth-jane"))
        assert grant is not None
        return grant


def test_an_expiring_token_is_renewed_while_the_daemon_runs_and_no_mail_is_lost(
    sqlite_db, oauth_dovecot, oauth_server, oauth_mailbox, run_daemon
) -> None:
    settings, credentials, user, clock = oauth_mailbox
    oauth_dovecot.append(user, "INBOX", [mail(user, "First over OAuth")])
    run_daemon(settings, credentials=credentials, now_fn=clock)
    wait_for(lambda: "First over OAuth" in subjects(sqlite_db), 20, "the OAuth mailbox to sync")
    first_token_until = grant_of(sqlite_db).access_token_expires_at
    asked = len(oauth_server.grants)

    # the hour passes: the provider lets the token lapse, the server drops the connection
    clock.offset = timedelta(minutes=58)
    oauth_server.expire_access_tokens(user)
    drop_connections(oauth_dovecot, user)
    oauth_dovecot.append(user, "INBOX", [mail(user, "Sent as the token lapsed")])
    wait_for(
        lambda: "Sent as the token lapsed" in subjects(sqlite_db) or skip_backoff(sqlite_db, clock),
        30,
        "the mail after the renewal",
    )
    assert oauth_server.grants[asked:] == ["refresh_token"]  # renewed once, not on every poll
    grant = grant_of(sqlite_db)
    assert grant.state is GrantState.ACTIVE
    assert first_token_until is not None and grant.access_token_expires_at is not None
    assert grant.access_token_expires_at > first_token_until
    assert subjects(sqlite_db) == {"First over OAuth", "Sent as the token lapsed"}


def test_a_revoked_grant_becomes_reconnect_needed_and_is_not_retried_every_poll(
    sqlite_db, oauth_dovecot, oauth_server, oauth_mailbox, run_daemon
) -> None:
    settings, credentials, user, clock = oauth_mailbox
    run_daemon(settings, credentials=credentials, now_fn=clock)
    wait_for(lambda: _status(sqlite_db) is not None, 20, "the first sync")

    oauth_server.revoke_user(user)
    drop_connections(oauth_dovecot, user)
    oauth_dovecot.append(user, "INBOX", [mail(user, "Waiting for the reconnect")])
    wait_for(
        lambda: grant_of(sqlite_db).state is GrantState.RECONNECT_NEEDED or skip_backoff(sqlite_db, clock),
        30,
        "reconnect needed",
    )
    asked = len(oauth_server.grants)
    time.sleep(3)  # three poll intervals
    assert len(oauth_server.grants) == asked  # the provider is not asked again
    status = _status(sqlite_db)
    assert status is not None and status.next_attempt_at is not None
    assert status.next_attempt_at > clock() + timedelta(minutes=2)  # backing off, not retrying each poll
    assert "needs reconnecting" in (status.last_error or "")
    assert "Waiting for the reconnect" not in subjects(sqlite_db)

    connect(credentials, oauth_server, user)  # the owner connects it again: it syncs at once
    wait_for(lambda: "Waiting for the reconnect" in subjects(sqlite_db), 20, "the sync after reconnecting")
    with sqlite_db.sessions() as session:
        assert session.scalar(select(func.count(Activity.id))) == 1


def skip_backoff(db: TestDatabase, clock: Clock) -> bool:
    """The dropped connection made the mailbox back off (as after any lost connection): let that time pass
    on the daemon's clock instead of waiting for it. Always False, so wait_for goes on waiting."""
    status = _status(db)
    if status is None or status.next_attempt_at is None or "needs reconnecting" in (status.last_error or ""):
        return False
    if status.next_attempt_at > clock():
        clock.offset += status.next_attempt_at - clock() + timedelta(seconds=1)
    return False


def _status(db: TestDatabase) -> MailboxStatus | None:
    with db.sessions() as session:
        return session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == "oauth-jane"))
