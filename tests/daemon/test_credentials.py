"""Access tokens for OAuth mailboxes: cached encrypted in the grant, renewed before they expire, and a refused
grant recorded once and then left alone. Time is the test's: the token source gets `now` from it."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from daemon.credentials import MailboxCredentials, NotConnectedError, ReconnectNeededError
from daemon.imap import ImapAuthError
from daemon.oauth import OAuthClient
from models.schema import GrantFlow, GrantState, OAuthGrant
from models.secrets import SecretBox, generate_key
from settings import MailboxAuth, MailboxSettings, Secret
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings

REDIRECT = "http://localhost/callback"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def setup(sqlite_db, oauth_server: OAuthTestServer):  # type: ignore[no-untyped-def]
    user = f"user-{secrets.token_hex(3)}"
    oauth_server.add_user(user)
    registered = oauth_server.add_client(
        secret="s",
        redirect_uris=(REDIRECT,),
        grant_types=("authorization_code", "refresh_token", "client_credentials"),
        app_mailbox=user,
    )
    provider = provider_settings(oauth_server, registered)
    clock = Clock()
    credentials = MailboxCredentials(
        sqlite_db.sessions, box=SecretBox([generate_key()]), providers={"local": provider}, now_fn=clock
    )
    mailbox = MailboxSettings(
        name="jane",
        host="127.0.0.1",
        username=user,
        auth=MailboxAuth.OAUTH,
        provider="local",
        security="none",
    )
    return credentials, mailbox, clock, user, provider


def connect(credentials: MailboxCredentials, mailbox: MailboxSettings, oauth_server, user) -> None:  # type: ignore[no-untyped-def]
    client = credentials.client(credentials.provider(mailbox))
    request = client.begin_authorization(REDIRECT)
    tokens = client.finish_authorization(request, oauth_server.approve(request.url, user))
    credentials.store(mailbox, GrantFlow.AUTHORIZATION_CODE, tokens)


def test_the_cached_token_is_shared_until_it_nears_its_end_then_renewed(setup, oauth_server):
    credentials, mailbox, clock, user, _ = setup
    connect(credentials, mailbox, oauth_server, user)
    asked = len(oauth_server.grants)
    first = credentials.access_token(mailbox)
    clock.now += timedelta(minutes=50)  # the hour-long token has 10 minutes left: still shared
    assert credentials.access_token(mailbox) == first
    assert len(oauth_server.grants) == asked
    clock.now += timedelta(minutes=6)  # under five minutes left: renewed before anyone uses it
    second = credentials.access_token(mailbox)
    assert second != first and oauth_server.grants[asked:] == ["refresh_token"]
    assert oauth_server.introspect(second)["active"] is True
    with credentials.sessions() as session:
        grant = session.scalar(select(OAuthGrant))
        assert grant is not None and grant.refreshed_at == clock.now


def test_a_token_the_server_refused_is_not_handed_out_again(setup, oauth_server):
    credentials, mailbox, _, user, _ = setup
    connect(credentials, mailbox, oauth_server, user)
    token = credentials.access_token(mailbox)
    credentials.rejected(mailbox, "some other token")  # not the cached one: nothing happens
    assert credentials.access_token(mailbox) == token
    credentials.rejected(mailbox, token)
    assert credentials.access_token(mailbox) != token


def test_a_refused_grant_is_recorded_once_and_then_left_alone(setup, oauth_server):
    credentials, mailbox, clock, user, _ = setup
    connect(credentials, mailbox, oauth_server, user)
    oauth_server.revoke_user(user)
    clock.now += timedelta(hours=2)
    with pytest.raises(ReconnectNeededError) as refused:
        credentials.access_token(mailbox)
    assert isinstance(refused.value, ImapAuthError)  # the sync backs off as after a wrong password
    assert refused.value.reason == "invalid_grant" and refused.value.since == clock.now
    asked = len(oauth_server.grants)
    clock.now += timedelta(hours=1)
    with pytest.raises(ReconnectNeededError, match="needs reconnecting since"):
        credentials.access_token(mailbox)
    assert len(oauth_server.grants) == asked
    with credentials.sessions() as session:
        grant = session.scalar(select(OAuthGrant))
        assert grant is not None and grant.state is GrantState.RECONNECT_NEEDED
        assert grant.reconnect_needed_at == clock.now - timedelta(hours=1)


def test_a_mailbox_never_connected_or_moved_to_another_provider_says_so(setup, oauth_server):
    credentials, mailbox, _, user, provider = setup
    with pytest.raises(NotConnectedError, match="run `threadline mailbox connect jane`"):
        credentials.access_token(mailbox)
    connect(credentials, mailbox, oauth_server, user)
    moved = replace(mailbox, provider="other")
    credentials.providers = {"local": provider, "other": replace(provider, name="other")}
    with pytest.raises(ReconnectNeededError, match="was connected through local, now configured for other"):
        credentials.access_token(moved)


def test_app_only_mailboxes_get_and_cache_a_client_credentials_token(setup, oauth_server):
    credentials, mailbox, clock, user, _ = setup
    app = replace(mailbox, auth=MailboxAuth.APP)
    token = credentials.access_token(app)
    assert oauth_server.introspect(token)["username"] == user
    assert credentials.access_token(app) == token
    clock.now += timedelta(hours=1)
    assert credentials.access_token(app) != token


def test_a_password_mailbox_signs_in_with_its_password(setup):
    credentials, mailbox, *_ = setup
    plain = MailboxSettings(name="p", host="imap.example", username="u", password=Secret("pw", "test"))
    target = credentials.imap_target(plain)
    assert (target.password, target.oauth) == ("pw", None)
    oauth = credentials.imap_target(mailbox)
    assert oauth.password == "" and oauth.oauth is not None and oauth.oauth.mechanism == "xoauth2"
    assert "pw" not in repr(target)


def test_client_is_built_per_provider(setup):
    credentials, mailbox, *_ = setup
    assert isinstance(credentials.client(credentials.provider(mailbox)), OAuthClient)
