"""Configuration of OAuth providers, mailbox sign-in kinds and the encryption key: presets, overrides, and one
line naming the file and the key for every mistake."""

from __future__ import annotations

import pytest

from settings import ConfigError, MailboxAuth, OAuthPreset, SaslMechanism, Sharing, load_settings
from threadline.cli import main

KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="  # 32 bytes, URL-safe base64
MICROSOFT = """
[oauth.microsoft]
tenant = "contoso.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret_env = "MS_SECRET"
"""
OAUTH_MAILBOX = """
[[mailboxes]]
name = "jane"
username = "jane@contoso.com"
auth = "oauth"
provider = "microsoft"
"""


def load(tmp_path, text, environ=None):  # type: ignore[no-untyped-def]
    path = tmp_path / "threadline.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ=environ or {"MS_SECRET": "client-very-secret", "KEY": KEY})


def test_the_microsoft_preset_fills_in_the_tenant_endpoints_scopes_and_host(tmp_path):
    settings = load(tmp_path, MICROSOFT + OAUTH_MAILBOX)
    provider = settings.oauth["microsoft"]
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
    assert (provider.preset, provider.authorize_url, provider.token_url, provider.device_url) == (
        OAuthPreset.MICROSOFT,
        f"{base}/authorize",
        f"{base}/token",
        f"{base}/devicecode",
    )
    assert provider.scopes == (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    )
    assert provider.sasl is SaslMechanism.XOAUTH2
    [mailbox] = settings.mailboxes
    assert (mailbox.host, mailbox.port, mailbox.auth, mailbox.sharing) == (
        "outlook.office365.com",
        993,
        MailboxAuth.OAUTH,
        Sharing.SHARED,
    )
    assert mailbox.password.reveal() == ""
    assert "client-very-secret" not in repr(settings)


def test_the_google_preset_asks_for_offline_access_and_has_no_device_flow(tmp_path):
    settings = load(tmp_path, '[oauth.google]\nclient_id = "g.apps.googleusercontent.com"\n')
    google = settings.oauth["google"]
    assert google.scopes == ("https://mail.google.com/",)
    assert google.device_url is None  # Google's device flow does not allow the mail scope
    assert dict(google.authorize_params) == {"access_type": "offline", "prompt": "consent"}
    assert google.imap_host == "imap.gmail.com"


def test_every_endpoint_can_be_pointed_elsewhere(tmp_path):
    settings = load(
        tmp_path,
        MICROSOFT
        + 'token_url = "http://127.0.0.1:8080/token"\ndevice_url = "https://idp.example/device"\n'
        + 'revoke_url = "https://idp.example/revoke"\nscopes = ["imap"]\nsasl = "oauthbearer"\n'
        + "[oauth.microsoft.authorize_params]\ndomain_hint = 'contoso.com'\n",
    )
    provider = settings.oauth["microsoft"]
    assert (provider.token_url, provider.device_url, provider.revoke_url, provider.scopes, provider.sasl) == (
        "http://127.0.0.1:8080/token",
        "https://idp.example/device",
        "https://idp.example/revoke",
        ("imap",),
        SaslMechanism.OAUTHBEARER,
    )
    assert dict(provider.authorize_params) == {"domain_hint": "contoso.com"}


def test_the_key_is_read_and_may_hold_an_old_key_after_the_new_one(tmp_path):
    other = "YmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm8="
    settings = load(tmp_path, '[secrets]\nkey_env = "KEY"\n', {"KEY": f"{KEY}, {other}"})
    assert settings.secrets.keys == (KEY, other)
    assert KEY not in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[oauth.local]\nclient_id = 'x'\n", "oauth.local.token_url: required for preset = 'generic'"),
        (
            "[oauth.local]\nclient_id = 'x'\ntoken_url = 'http://idp.example/token'\n",
            "oauth.local.token_url: 'http://idp.example/token' would send secrets unencrypted; use https",
        ),
        ("[oauth.microsoft]\ntenant = 'x'\n", "oauth.microsoft.client_id: required key is missing"),
        (
            "[oauth.google]\nclient_id = 'x'\ntenant = 't'\n",
            "oauth.google.tenant: only for preset = 'microsoft'",
        ),
        (
            "[oauth.x]\npreset = 'yahoo'\nclient_id = 'x'\n",
            "oauth.x.preset: must be one of microsoft, google",
        ),
        (
            "[oauth.google]\nclient_id = 'x'\nclient_secret = 'shh'\n",
            "oauth.google.client_secret: secrets are not",
        ),
        (MICROSOFT + "colour = 'blue'\n", "oauth.microsoft.colour: unknown key"),
        (
            OAUTH_MAILBOX,
            "mailboxes[0].provider: no OAuth provider 'microsoft' in [oauth] (known: none configured)",
        ),
        (
            MICROSOFT + OAUTH_MAILBOX + 'password_env = "P"\n',
            "mailboxes[0].password_env: a mailbox with auth = 'oauth' signs in with a token, not a password",
        ),
        (
            MICROSOFT + OAUTH_MAILBOX.replace('auth = "oauth"', 'auth = "token"'),
            "mailboxes[0].auth: must be one",
        ),
        (
            MICROSOFT + OAUTH_MAILBOX + 'sasl = "plain"\n',
            "mailboxes[0].sasl: must be one of xoauth2, oauthbearer",
        ),
        (
            MICROSOFT + OAUTH_MAILBOX + 'sharing = "public"\n',
            "mailboxes[0].sharing: must be one of shared, private",
        ),
        (
            MICROSOFT.replace('tenant = "contoso.onmicrosoft.com"\n', "")
            + OAUTH_MAILBOX.replace('auth = "oauth"', 'auth = "app"'),
            "mailboxes[0].auth: app-only access is granted by one tenant: set tenant in [oauth.microsoft]",
        ),
        (
            "[oauth.google]\nclient_id = 'x'\n"
            + OAUTH_MAILBOX.replace("microsoft", "google").replace('"oauth"', '"app"'),
            "mailboxes[0].auth: Google has no client credentials grant for mail; use auth = 'oauth'",
        ),
        ("[secrets]\nkey_env = 'KEY'\n", "secrets.key_env: key 1 is not a Fernet key"),
        (
            "[secrets]\nkey_env = 'NOPE'\n",
            "secrets.key_env: environment variable NOPE for [secrets] is not set",
        ),
        ("[secrets]\nkey = 'abc'\n", "secrets.key: secrets are not written in the config file"),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path, monkeypatch, capsys, text, expected):
    monkeypatch.setenv("MS_SECRET", "client-very-secret")
    monkeypatch.setenv("KEY", "not-a-fernet-key")
    monkeypatch.setenv("P", "pw")
    monkeypatch.delenv("NOPE", raising=False)
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["--config", str(config), "db", "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"threadline: config error: {config}: {expected}")
    assert "client-very-secret" not in err and "shh" not in err


def test_config_error_lines_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        load(tmp_path, "[oauth]\nlocal = 1\n")
