"""The OAuth client against a real (local) authorization server: every flow, and every way it can say no."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from daemon.oauth import (
    ClientRejectedError,
    DeviceFlowError,
    GrantRefusedError,
    OAuthClient,
    OAuthError,
)
from settings import OAuthPreset, Secret
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings

REDIRECT = "http://localhost/callback"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def user(oauth_server: OAuthTestServer) -> str:
    import secrets

    name = f"user-{secrets.token_hex(3)}"
    oauth_server.add_user(name)
    return name


@pytest.fixture
def client(oauth_server: OAuthTestServer) -> OAuthClient:
    registered = oauth_server.add_client(
        secret="the-client-secret",
        redirect_uris=(REDIRECT,),
        grant_types=("authorization_code", "refresh_token", "client_credentials", DEVICE),
        app_mailbox="shared",
    )
    return OAuthClient(provider_settings(oauth_server, registered))


def test_authorization_code_with_pkce(oauth_server, client, user):
    request = client.begin_authorization(REDIRECT, login_hint=user)
    query = parse_qs(urlsplit(request.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["login_hint"] == [user]
    assert request.code_verifier not in request.url  # only its hash travels through the browser
    assert "the-client-secret" not in request.url
    tokens = client.finish_authorization(request, oauth_server.approve(request.url, user))
    assert tokens.refresh_token and tokens.scopes == ("imap", "smtp", "offline_access")
    assert oauth_server.introspect(tokens.access_token)["username"] == user
    assert tokens.expires_at > datetime.now(UTC) + timedelta(minutes=55)
    assert tokens.access_token not in repr(tokens) and tokens.refresh_token not in repr(tokens)


def test_the_code_is_useless_without_this_sign_ins_verifier_and_state(oauth_server, client, user):
    request = client.begin_authorization(REDIRECT)
    back = oauth_server.approve(request.url, user)
    forged = replace(request, code_verifier="x" * 64)
    with pytest.raises(GrantRefusedError, match="invalid_grant"):
        client.finish_authorization(forged, back)
    other = client.begin_authorization(REDIRECT)
    with pytest.raises(OAuthError, match="state differs"):
        client.finish_authorization(other, oauth_server.approve(other.url, user).replace("state=", "state=x"))


def test_a_declined_consent_is_refused(oauth_server, client, user):
    request = client.begin_authorization(REDIRECT)
    back = oauth_server.approve(request.url, user, allow=False)
    with pytest.raises(GrantRefusedError, match="access_denied"):
        client.finish_authorization(request, back)


def test_device_flow_waits_for_the_user(oauth_server, client, user):
    device = client.start_device_authorization()
    assert device.verification_uri == oauth_server.url("/device") and device.interval == 1
    pending = oauth_server.grants.count(DEVICE)
    threading.Timer(1.5, oauth_server.approve_device, (device.user_code, user)).start()
    tokens = client.poll_device_authorization(device)
    assert oauth_server.grants.count(DEVICE) - pending >= 2  # at least one authorization_pending first
    assert oauth_server.introspect(tokens.access_token)["username"] == user


def test_device_flow_ends_when_declined_expired_or_stopped(oauth_server, client, user):
    device = client.start_device_authorization()
    oauth_server.approve_device(device.user_code, user, allow=False)
    with pytest.raises(DeviceFlowError, match="access_denied"):
        client.poll_device_authorization(device)
    expired = replace(
        client.start_device_authorization(), expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with pytest.raises(DeviceFlowError, match="expired"):
        client.poll_device_authorization(expired)
    stop = threading.Event()
    stop.set()
    with pytest.raises(DeviceFlowError, match="stopped"):
        client.poll_device_authorization(client.start_device_authorization(), stop=stop)


def test_refresh_rotates_and_a_used_or_revoked_refresh_token_is_a_refused_grant(oauth_server, client, user):
    request = client.begin_authorization(REDIRECT)
    first = client.finish_authorization(request, oauth_server.approve(request.url, user))
    assert first.refresh_token is not None
    second = client.refresh(first.refresh_token)
    assert second.refresh_token not in (None, first.refresh_token)
    with pytest.raises(GrantRefusedError) as refused:
        client.refresh(first.refresh_token)  # rotated away
    assert refused.value.reason == "invalid_grant"
    oauth_server.revoke_user(user)
    assert second.refresh_token is not None
    with pytest.raises(GrantRefusedError):
        client.refresh(second.refresh_token)


def test_client_credentials_and_a_wrong_client_secret(oauth_server, client):
    tokens = client.client_credentials()
    assert (
        tokens.refresh_token is None and oauth_server.introspect(tokens.access_token)["username"] == "shared"
    )
    wrong = OAuthClient(replace(client.provider, client_secret=Secret("not-the-secret", "test")))
    with pytest.raises(ClientRejectedError, match="invalid_client") as error:
        wrong.client_credentials()
    assert "not-the-secret" not in str(error.value)


def test_a_public_client_never_sends_a_secret_in_the_device_flow(oauth_server, user):
    public = oauth_server.add_client(grant_types=("refresh_token", DEVICE))
    microsoft_like = replace(provider_settings(oauth_server, public), preset=OAuthPreset.MICROSOFT)
    client = OAuthClient(microsoft_like)
    assert client.device_flow_is_public
    device = client.start_device_authorization()
    oauth_server.approve_device(device.user_code, user)
    tokens = client.poll_device_authorization(device)
    assert tokens.refresh_token is not None
    assert client.refresh(tokens.refresh_token, public=True).access_token


def test_revocation(oauth_server, client, user):
    request = client.begin_authorization(REDIRECT)
    tokens = client.finish_authorization(request, oauth_server.approve(request.url, user))
    assert tokens.refresh_token is not None
    assert client.revoke(tokens.refresh_token) is True
    assert oauth_server.introspect(tokens.access_token) == {"active": False}
    assert OAuthClient(replace(client.provider, revoke_url=None)).revoke("anything") is False


def test_a_grant_without_a_refresh_token_is_refused_up_front(oauth_server, user):
    no_refresh = oauth_server.add_client(
        secret="s", redirect_uris=(REDIRECT,), grant_types=("authorization_code",)
    )
    client = OAuthClient(provider_settings(oauth_server, no_refresh))
    request = client.begin_authorization(REDIRECT)
    with pytest.raises(OAuthError, match="gave no refresh token"):
        client.finish_authorization(request, oauth_server.approve(request.url, user))


def test_an_unreachable_provider_is_a_plain_error_without_secrets(client):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = OAuthClient(
        replace(client.provider, token_url=f"http://127.0.0.1:{port}/token", timeout_seconds=2)
    )
    with pytest.raises(OAuthError) as error:
        down.refresh("a-refresh-token-value")
    assert type(error.value) is OAuthError
    assert str(error.value) == "local: token refresh: cannot connect to the provider"
