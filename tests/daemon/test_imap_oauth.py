"""Signing in to IMAP with an OAuth access token: SASL XOAUTH2 and OAUTHBEARER against a real Dovecot that
checks every token at the local authorization server (RFC 7662 introspection)."""

from __future__ import annotations

import pytest

from daemon.imap import ImapAuthError, ImapSession, ImapTarget, OAuthLogin
from daemon.oauth import OAuthClient
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings


class Tokens:
    """A TokenSource that hands out a list of tokens in turn and remembers what the server refused."""

    def __init__(self, *tokens: str) -> None:
        self.queue = list(tokens)
        self.refused: list[str] = []

    def access_token(self) -> str:
        return self.queue[0]

    def rejected(self, token: str) -> None:
        self.refused.append(token)
        if len(self.queue) > 1 and self.queue[0] == token:
            self.queue.pop(0)


@pytest.fixture
def oauth_user(oauth_dovecot: DovecotServer, oauth_server: OAuthTestServer):
    """(username, access token): a Dovecot user connected through the local provider."""
    from tests.fixtures.dovecot import _user_numbers

    name = f"oauth{next(_user_numbers)}"
    oauth_dovecot.add_user(name, "set-up-only-password")
    oauth_server.add_user(name)
    client = oauth_server.add_client(secret="s3cret", grant_types=("client_credentials",), app_mailbox=name)
    token = OAuthClient(provider_settings(oauth_server, client)).client_credentials()
    return name, token.access_token


def target(server: DovecotServer, user: str, mechanism: str, tokens: Tokens) -> ImapTarget:
    return ImapTarget(
        host=server.host,
        port=server.port,
        security="none",
        username=user,
        timeout=10,
        oauth=OAuthLogin(mechanism=mechanism, tokens=tokens),
    )


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_a_valid_token_signs_in_and_reads_the_mailbox(oauth_dovecot, oauth_user, mechanism):
    user, token = oauth_user
    oauth_dovecot.append(user, "INBOX", [b"Subject: hi\r\n\r\nhello\r\n"])
    with ImapSession(target(oauth_dovecot, user, mechanism, Tokens(token))) as imap:
        status = imap.select_readonly("INBOX")
        assert status.messages == 1
        (message,) = imap.fetch_messages(imap.search_uids_from(1))
        assert message.data.endswith(b"hello\r\n")


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_a_refused_token_is_an_auth_error_like_a_wrong_password(
    oauth_dovecot, oauth_server, oauth_user, mechanism
):
    user, token = oauth_user
    oauth_server.expire_access_tokens(user)
    tokens = Tokens(token)
    with pytest.raises(ImapAuthError, match=f"login with {mechanism.upper()} refused for {user}"):
        ImapSession(target(oauth_dovecot, user, mechanism, tokens)).connect()
    assert tokens.refused == [token]  # the source was told, so it will not hand the token out again


def test_a_token_for_another_user_does_not_open_this_mailbox(oauth_dovecot, oauth_server, oauth_user):
    user, _ = oauth_user
    other = f"{user}-other"
    oauth_dovecot.add_user(other, "set-up-only-password")
    oauth_server.add_user(other)
    client = oauth_server.add_client(secret="s3cret", grant_types=("client_credentials",), app_mailbox=other)
    others_token = OAuthClient(provider_settings(oauth_server, client)).client_credentials().access_token
    with pytest.raises(ImapAuthError):
        ImapSession(target(oauth_dovecot, user, "xoauth2", Tokens(others_token))).connect()


def test_a_refused_token_is_retried_once_with_the_fresh_one_the_source_then_has(
    oauth_dovecot, oauth_server, oauth_user
):
    user, stale = oauth_user
    client = oauth_server.add_client(secret="s3cret", grant_types=("client_credentials",), app_mailbox=user)
    oauth_server.expire_access_tokens(user)
    fresh = OAuthClient(provider_settings(oauth_server, client)).client_credentials().access_token
    tokens = Tokens(stale, fresh)
    with ImapSession(target(oauth_dovecot, user, "xoauth2", tokens)) as imap:
        assert imap.select_readonly("INBOX").uidvalidity > 0
    assert tokens.refused == [stale]


def test_a_server_without_the_mechanism_says_so(dovecot, mailbox_user):
    user, _ = mailbox_user()
    with pytest.raises(ImapAuthError, match=r"does not offer SASL XOAUTH2 \(it offers: LOGIN, PLAIN\)"):
        ImapSession(target(dovecot, user, "xoauth2", Tokens("any"))).connect()
