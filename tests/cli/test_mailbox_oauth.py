"""Mailboxes that sign in with OAuth, end to end through the `threadline` command in its own process.

The local authorization server (tests/fixtures/oauth_server.py) plays Microsoft or Google; a Dovecot with an
oauth2 passdb checks every token against it. The stories: connect with the device code, then sync over
XOAUTH2 and OAUTHBEARER; an access token that dies between syncs is renewed and no mail is lost; a revoked
grant becomes "reconnect needed" and stops asking the provider; app-only access with client credentials;
the browser flow; and the secrets never show up in the database, in the output or in the logs.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text

from models.schema import Activity, GrantState, OAuthGrant
from models.secrets import generate_key
from tests.daemon.conftest import build_message
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.oauth_server import SCOPE, OAuthTestServer, TestClient
from threadline.cli import main

REPO = Path(__file__).resolve().parents[2]
TEAM = "team.example"
CLIENT_SECRET = "client-secret-" + secrets.token_hex(8)
_numbers = itertools.count(1)


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Install:
    """One Threadline installation: a config file, its environment, and the mailbox it syncs."""

    config: Path
    env: dict[str, str]
    user: str  # the Dovecot user and the provider's user
    address: str
    db: TestDatabase
    capsys: pytest.CaptureFixture[str]
    outputs: list[str] = field(default_factory=list)

    def run(self, *args: str) -> Result:
        """The command in this process (its environment is the test's, see make_install)."""
        self.capsys.readouterr()
        code = main(["--config", str(self.config), *args])
        captured = self.capsys.readouterr()
        self.outputs += [captured.out, captured.err]
        return Result(code, captured.out, captured.err)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command in a process of its own, for the interactive flows (it prints, then waits)."""
        return subprocess.Popen(
            [sys.executable, "-m", "threadline", "--config", str(self.config), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=REPO,
        )

    def finish(self, process: subprocess.Popen[str], stdin: str | None = None) -> Result:
        out, err = process.communicate(input=stdin, timeout=120)
        self.outputs += [out, err]
        return Result(process.returncode, out, err)

    def subjects(self) -> list[str]:
        with self.db.sessions() as session:
            return sorted(session.scalars(select(Activity.subject)))

    def grant(self) -> OAuthGrant | None:
        with self.db.sessions() as session:
            return session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == "jane"))


def read_until(stream: object, pattern: str, seen: list[str]) -> re.Match[str]:
    """Read lines from a child's stdout until one matches (the child prints, then waits)."""
    regex = re.compile(pattern)
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            raise AssertionError(f"output ended before {pattern!r}:\n{''.join(seen)}")
        seen.append(line)
        match = regex.search(line)
        if match:
            return match


@pytest.fixture
def oauth_client(oauth_server: OAuthTestServer) -> TestClient:
    return oauth_server.add_client(
        secret=CLIENT_SECRET,
        redirect_uris=("http://localhost/",),
        grant_types=(
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code",
        ),
    )


@pytest.fixture
def token_lifetime(oauth_server: OAuthTestServer) -> Iterator[Callable[[int], None]]:
    def set_lifetime(seconds: int) -> None:
        oauth_server.token_lifetime = seconds

    yield set_lifetime
    oauth_server.token_lifetime = 3600


@pytest.fixture
def make_install(
    tmp_path: Path,
    oauth_server: OAuthTestServer,
    oauth_dovecot: DovecotServer,
    oauth_client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[..., Install]]:
    def make(db: TestDatabase, *, sasl: str = "xoauth2", auth: str = "oauth", device: bool = True) -> Install:
        user = f"jane{next(_numbers)}-{secrets.token_hex(2)}"
        oauth_dovecot.add_user(user, "set-up-only-" + secrets.token_hex(4))
        oauth_server.add_user(user)
        if auth == "app":
            oauth_client.app_mailbox = user
        key_file = tmp_path / "threadline.key"
        key_file.write_text(generate_key() + "\n")
        device_url = f'device_url = "{oauth_server.url("/device_authorization")}"' if device else ""
        config = tmp_path / "threadline.toml"
        config.write_text(
            f"""
[database]
url_env = "TEST_DATABASE_URL"

[team]
domains = ["{TEAM}"]

[secrets]
key_file = "{key_file}"

[oauth.local]
client_id = "{oauth_client.client_id}"
client_secret_env = "TEST_CLIENT_SECRET"
authorize_url = "{oauth_server.url("/authorize")}"
token_url = "{oauth_server.url("/token")}"
{device_url}
revoke_url = "{oauth_server.url("/revoke")}"
scopes = {SCOPE.split()!r}
app_scopes = ["imap"]
sasl = "{sasl}"
timeout_seconds = 10

[[mailboxes]]
name = "jane"
host = "{oauth_dovecot.host}"
port = {oauth_dovecot.port}
security = "none"
username = "{user}"
address = "jane@{TEAM}"
auth = "{auth}"
provider = "local"
timeout_seconds = 10

[logging]
level = "DEBUG"
""".replace("'", '"'),
            encoding="utf-8",
        )
        monkeypatch.setenv("TEST_DATABASE_URL", db.url)
        monkeypatch.setenv("TEST_CLIENT_SECRET", CLIENT_SECRET)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "TEST_DATABASE_URL": db.url,
            "TEST_CLIENT_SECRET": CLIENT_SECRET,
            "PYTHONPATH": str(REPO),
        }
        return Install(config=config, env=env, user=user, address=f"jane@{TEAM}", db=db, capsys=capsys)

    yield make
    # the in-process runs set up logging on this test's captured stderr: leave nothing behind
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_threadline", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def connect_with_device_code(install: Install, oauth_server: OAuthTestServer) -> Result:
    process = install.start("mailbox", "connect", "jane")
    seen: list[str] = []
    assert process.stdout is not None
    url = read_until(process.stdout, r"open (http\S+)", seen).group(1)
    code = read_until(process.stdout, r"enter the code ([A-Z]{4}-[A-Z]{4})", seen).group(1)
    assert url == oauth_server.url("/device")
    oauth_server.approve_device(code, install.user)
    result = install.finish(process)
    return Result(result.code, "".join(seen) + result.out, result.err)


def send(dovecot: DovecotServer, install: Install, subject: str, folder: str = "INBOX") -> None:
    """Mail jane wrote to a customer (outbound, so it is logged and the customer becomes a contact)."""
    raw = build_message(from_=install.address, to="buyer@customer.example", subject=subject)
    dovecot.append(install.user, folder, [raw])


def issued_secrets(oauth_server: OAuthTestServer) -> list[str]:
    with oauth_server.store.lock:
        tokens = [t.access_token for t in oauth_server.store.tokens]
        tokens += [t.refresh_token for t in oauth_server.store.tokens if t.refresh_token]
    return [*tokens, CLIENT_SECRET]


def database_text(db: TestDatabase) -> str:
    """Every value in every table, as text: what a dump or a backup of the database would hold."""
    metadata = MetaData()
    metadata.reflect(db.engine)
    parts = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(text(f'SELECT * FROM "{table.name}"')):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


# ---- the stories ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sasl", ["xoauth2", "oauthbearer"])
def test_device_code_connect_then_sync_logs_mail(db, make_install, oauth_server, oauth_dovecot, sasl):  # type: ignore[no-untyped-def]
    install = make_install(db, sasl=sasl)
    assert install.run("db", "upgrade").code == 0
    send(oauth_dovecot, install, "Proposal for Customer")

    connected = connect_with_device_code(install, oauth_server)
    assert connected.code == 0, connected.err
    assert (
        f"mailbox 'jane' connected through local: signed in to 127.0.0.1 as {install.user}" in connected.out
    )

    listed = install.run("mailbox", "list")
    assert re.search(r"jane\s+config\s+oauth via local\s+connected, not synced yet", listed.out), listed.out

    synced = install.run("sync", "--once")
    assert synced.code == 0, synced.err
    assert synced.out.startswith("jane: 1 new, 1 logged")
    assert install.subjects() == ["Proposal for Customer"]
    assert f"method={sasl.upper()}" in oauth_dovecot.log_tail(200)

    # the grant is stored encrypted only, and no token or client secret is in the output or the logs
    grant = install.grant()
    assert grant is not None and grant.state is GrantState.ACTIVE and grant.flow.value == "device"
    assert grant.refresh_token_encrypted is not None and grant.refresh_token_encrypted.startswith("gAAAAA")
    dump = database_text(db)
    output = "\n".join(install.outputs)
    assert "DEBUG" in output  # the logs were captured at their most talkative
    for secret in issued_secrets(oauth_server):
        assert secret not in dump
        assert secret not in output


def test_an_access_token_dying_between_two_syncs_is_renewed_and_no_mail_is_lost(
    sqlite_db, make_install, oauth_server, oauth_dovecot
):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db)
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0
    send(oauth_dovecot, install, "First")
    assert install.run("sync", "--once").code == 0

    # the provider ends the token early (our copy still looks good for an hour): the server refuses it,
    # the sync renews it with the refresh token and signs in again
    assert oauth_server.expire_access_tokens(install.user) >= 1
    refreshes = oauth_server.grants.count("refresh_token")
    send(oauth_dovecot, install, "Second")
    send(oauth_dovecot, install, "Sent reply", folder="Sent")
    synced = install.run("sync", "--once")
    assert synced.code == 0, synced.out + synced.err
    assert oauth_server.grants.count("refresh_token") == refreshes + 1
    assert install.subjects() == ["First", "Second", "Sent reply"]
    assert "access token renewed" in synced.err


def test_an_access_token_about_to_expire_is_renewed_before_signing_in(
    sqlite_db, make_install, oauth_server, oauth_dovecot, token_lifetime
):  # type: ignore[no-untyped-def]
    token_lifetime(120)  # under the five minutes of margin: every sign-in renews it first
    install = make_install(sqlite_db, sasl="oauthbearer")
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0
    for round_ in range(2):
        send(oauth_dovecot, install, f"Round {round_}")
        before = oauth_server.grants.count("refresh_token")
        synced = install.run("sync", "--once")
        assert synced.code == 0, synced.err
        assert oauth_server.grants.count("refresh_token") == before + 1
    assert install.subjects() == ["Round 0", "Round 1"]
    # Dovecot never saw a refused token: the renewal came before the sign-in
    assert "AUTHENTICATIONFAILED" not in "\n".join(install.outputs)


def test_a_revoked_grant_means_reconnect_needed_and_the_provider_is_left_alone(
    db, make_install, oauth_server, oauth_dovecot
):  # type: ignore[no-untyped-def]
    install = make_install(db)
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0
    send(oauth_dovecot, install, "Before revocation")
    assert install.run("sync", "--once").code == 0

    oauth_server.revoke_user(install.user)  # consent withdrawn: access and refresh tokens die
    send(oauth_dovecot, install, "While disconnected")
    failed = install.run("sync", "--once")
    assert failed.code == 1
    assert "needs reconnecting" in failed.out and "invalid_grant" in failed.out
    grant = install.grant()
    assert grant is not None and grant.state is GrantState.RECONNECT_NEEDED
    assert grant.reconnect_reason is not None and grant.reconnect_reason.startswith("invalid_grant")
    assert grant.reconnect_needed_at is not None
    assert grant.refresh_token_encrypted is None and grant.access_token_encrypted is None
    assert re.search(r"jane .*reconnect needed since \d{4}-\d\d-\d\dT", install.run("mailbox", "list").out)

    # later attempts fail from the stored state, without asking the provider again
    asked = len(oauth_server.grants)
    again = install.run("sync", "--once")
    assert again.code == 1 and "needs reconnecting" in again.out
    assert len(oauth_server.grants) == asked

    # connecting again clears it, and the mail that arrived meanwhile is logged
    assert connect_with_device_code(install, oauth_server).code == 0
    grant = install.grant()
    assert grant is not None and grant.state is GrantState.ACTIVE and grant.reconnect_reason is None
    assert install.run("sync", "--once").code == 0
    assert install.subjects() == ["Before revocation", "While disconnected"]


def test_without_the_key_the_commands_stop_with_one_line(sqlite_db, make_install, oauth_server):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db)
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0

    keyless = install.config.with_name("keyless.toml")
    keyless.write_text(re.sub(r"\[secrets\]\nkey_file = .*\n", "", install.config.read_text()))
    for args in (["sync", "--once"], ["mailbox", "list"]):
        result = install.run("--config", str(keyless), *args)
        assert result.code == 2
        assert result.err.splitlines() == [
            "threadline: config error: the database holds 2 encrypted secrets (mailbox passwords or OAuth "
            "tokens) but no encryption key is configured: set [secrets] key_env (an environment variable) "
            "or key_file to the key they were encrypted with"
        ]

    wrong = install.config.with_name("wrong.toml")
    other_key = install.config.with_name("other.key")
    other_key.write_text(generate_key())
    wrong.write_text(re.sub(r'key_file = ".*"', f'key_file = "{other_key}"', install.config.read_text()))
    result = install.run("--config", str(wrong), "sync", "--once")
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert "cannot be decrypted with the configured key" in result.err


def test_key_rotation_keeps_the_grant_working(sqlite_db, make_install, oauth_server, oauth_dovecot):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db)
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0
    key_file = Path(re.search(r'key_file = "(.*)"', install.config.read_text()).group(1))  # type: ignore[union-attr]
    old_key = key_file.read_text().strip()
    new_key = install.run("secrets", "generate-key").out.strip()
    key_file.write_text(f"{new_key},{old_key}\n")  # the new key first, the old one still readable
    rotated = install.run("secrets", "rotate")
    assert rotated.code == 0 and rotated.out.startswith("2 stored secrets re-encrypted")
    key_file.write_text(new_key)  # the old key is gone for good
    send(oauth_dovecot, install, "After rotation")
    assert install.run("sync", "--once").code == 0
    assert install.subjects() == ["After rotation"]


def test_app_only_access_with_client_credentials(sqlite_db, make_install, oauth_server, oauth_dovecot):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db, auth="app")
    install.run("db", "upgrade")
    send(oauth_dovecot, install, "Shared mailbox mail")
    synced = install.run("sync", "--once")  # no connect step: the app's own credentials get the token
    assert synced.code == 0, synced.out + synced.err
    assert install.subjects() == ["Shared mailbox mail"]
    grant = install.grant()
    assert grant is not None and grant.flow.value == "app" and grant.refresh_token_encrypted is None
    before = oauth_server.grants.count("client_credentials")
    send(oauth_dovecot, install, "Second")
    assert install.run("sync", "--once").code == 0
    assert oauth_server.grants.count("client_credentials") == before  # the stored token was reused
    assert install.subjects() == ["Second", "Shared mailbox mail"]


def test_browser_flow_from_the_cli(sqlite_db, make_install, oauth_server, oauth_dovecot):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db, device=False)  # like Google: no device flow for mail
    install.run("db", "upgrade")
    process = install.start("mailbox", "connect", "jane")
    assert process.stdout is not None and process.stdin is not None
    seen: list[str] = []
    url = read_until(process.stdout, r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)$", seen).group(1)
    assert "code_challenge_method=S256" in url and f"login_hint={install.user}" in url
    back = oauth_server.approve(url, install.user)
    assert back.startswith("http://localhost/?code=")
    result = install.finish(process, stdin=back + "\n")
    assert result.code == 0, result.err
    assert "connected through local" in result.out
    grant = install.grant()
    assert grant is not None and grant.flow.value == "browser"
    send(oauth_dovecot, install, "Via browser grant")
    assert install.run("sync", "--once").code == 0
    assert install.subjects() == ["Via browser grant"]


def test_disconnect_revokes_the_grant_at_the_provider(sqlite_db, make_install, oauth_server):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db)
    install.run("db", "upgrade")
    assert connect_with_device_code(install, oauth_server).code == 0
    with oauth_server.store.lock:
        live = [t for t in oauth_server.store.tokens if t.user == install.user and not t.refresh_revoked]
    result = install.run("mailbox", "disconnect", "jane")
    assert result.code == 0 and "its access revoked at local" in result.out
    assert all(t.refresh_revoked for t in live)
    assert install.grant() is None
    assert "not connected" in install.run("mailbox", "list").out
    failed = install.run("sync", "--once")
    assert failed.code == 1 and "threadline mailbox connect jane" in failed.out


def test_a_denied_device_sign_in_stores_nothing(sqlite_db, make_install, oauth_server):  # type: ignore[no-untyped-def]
    install = make_install(sqlite_db)
    install.run("db", "upgrade")
    process = install.start("mailbox", "connect", "jane")
    assert process.stdout is not None
    code = read_until(process.stdout, r"enter the code ([A-Z]{4}-[A-Z]{4})", []).group(1)
    threading.Timer(0.2, oauth_server.approve_device, (code, install.user), {"allow": False}).start()
    result = install.finish(process)
    assert result.code == 1
    assert result.err.strip() == (
        "threadline: mailbox 'jane' not connected: local: sign-in refused: access_denied "
        "(The resource owner or authorization server denied the request)"
    )
    assert install.grant() is None
