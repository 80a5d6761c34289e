"""The whole path a new rep takes, in Chromium: an admin adds their mailbox in the panel, the rep clicks
"Connect mailbox", agrees on the (local) provider's consent page, comes back to the panel, and the running
daemon (never restarted) logs their mail, which shows on the contact's timeline. Real Dovecot checking OAuth
tokens, the local authorization server, the panel under waitress, the daemon in a thread. Screenshots go to
test-output/."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from admin.app import create_app, serve
from daemon.credentials import MailboxCredentials
from daemon.service import Daemon
from models.db import transaction
from models.schema import ContactEmail
from models.secrets import SecretBox, generate_key
from models.users import create_user
from settings import (
    AdminSettings,
    DatabaseSettings,
    MatchingSettings,
    Secret,
    SecretsSettings,
    Settings,
    TeamSettings,
)
from tests.daemon.conftest import build_message
from tests.e2e.conftest import OUTPUT_DIR, _free_port
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import *  # noqa: F403
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings
from threadline.mailboxes import PanelConnector

PASSWORD = "correct horse battery"


@pytest.fixture
def panel_and_daemon(
    sqlite_db: TestDatabase, oauth_server: OAuthTestServer
) -> Iterator[tuple[str, Settings]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    client = oauth_server.add_client(
        secret="s3cret",
        redirect_uris=(f"{url}/admin/mailboxes/callback",),
        grant_types=("authorization_code", "refresh_token"),
    )
    key = generate_key()
    settings = Settings(
        source="e2e",
        database=DatabaseSettings(url=sqlite_db.url),
        team=TeamSettings(domains=("team.example",)),
        matching=MatchingSettings(create_contacts="sent_and_received"),
        admin=AdminSettings(secret_key=Secret("e" * 48, "test")),
        secrets=SecretsSettings(key=Secret(key, "test")),
        oauth={"local": provider_settings(oauth_server, client)},
    )
    with transaction(sqlite_db.sessions) as session:
        create_user(session, "boss@team.example", name="Bea Boss", role="admin", password=PASSWORD, now=NOW)
        create_user(session, "rita@team.example", name="Rita Rep", role="rep", password=PASSWORD, now=NOW)
    credentials = MailboxCredentials(sqlite_db.sessions, box=SecretBox([key]), providers=settings.oauth)
    app = create_app(settings, sqlite_db.sessions, connector=PanelConnector(credentials))
    stop = threading.Event()
    ready = threading.Event()
    options = {"stop_event": stop, "on_ready": lambda h, p: ready.set()}
    panel = threading.Thread(target=serve, args=(app, "127.0.0.1", port), kwargs=options, daemon=True)
    panel.start()
    assert ready.wait(10)
    daemon = Daemon(settings, sqlite_db.sessions, stop=stop, with_alerts=False, reload_seconds=0.5)
    worker = threading.Thread(target=daemon.run, name="e2e-daemon")
    worker.start()
    yield url, settings
    stop.set()
    worker.join(30)
    panel.join(10)
    assert not worker.is_alive() and not panel.is_alive()


def log_in(page: Any, url: str, email: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{url}/admin/**")


def test_a_rep_connects_their_mailbox_and_sees_their_mail(
    sqlite_db, panel_and_daemon, browser_page, oauth_dovecot: DovecotServer, oauth_server: OAuthTestServer
) -> None:
    url, _settings = panel_and_daemon
    page = browser_page
    user = f"rita{secrets.token_hex(3)}"
    oauth_dovecot.add_user(user, "set-up-only-password")
    oauth_server.add_user(user)
    oauth_dovecot.append(
        user,
        "INBOX",
        [build_message(from_="Carla Client <carla@client.example>", to=f"{user}@team.example",
                       subject="Ready to sign", body="We are ready to sign the contract.")],
    )  # fmt: skip

    # the admin adds Rita's mailbox in the panel: no config file, no restart
    log_in(page, url, "boss@team.example")
    page.goto(f"{url}/admin/mailboxes/")
    page.click("text=Add mailbox")
    page.fill("#name", "rita")
    page.fill("#host", oauth_dovecot.host)
    page.fill("#port", str(oauth_dovecot.port))
    page.select_option("#security", "none")
    page.fill("#username", user)
    page.select_option("#auth", "oauth")
    page.select_option("#provider", "local")
    page.select_option("#owner", "rita@team.example")
    page.fill("#address", f"{user}@team.example")
    page.fill("#poll_seconds", "2")
    page.check("#sharing-private")
    page.screenshot(path=str(OUTPUT_DIR / "mailbox-add.png"), full_page=True)
    page.click("button[type=submit]:has-text('Add mailbox')")
    assert "Mailbox rita added" in page.inner_text("body")
    page.click("#tl-logout")

    # Rita connects it herself
    log_in(page, url, "rita@team.example")
    page.goto(f"{url}/admin/mailboxes/")
    row = page.locator("#mailbox-rita")
    assert "Not connected" in row.inner_text()
    page.screenshot(path=str(OUTPUT_DIR / "mailbox-not-connected.png"), full_page=True)
    row.locator("button:has-text('Connect mailbox')").click()
    page.wait_for_url(f"{oauth_server.base_url}/authorize**")  # the provider's consent page
    assert page.input_value("#username") == user
    page.screenshot(path=str(OUTPUT_DIR / "mailbox-consent.png"), full_page=True)
    page.click("#allow")
    page.wait_for_url(f"{url}/admin/mailboxes/**")
    assert "Mailbox rita connected" in page.inner_text("body")

    # the running daemon picks it up and logs the waiting mail
    for _ in range(60):
        page.goto(f"{url}/admin/mailboxes/")
        if page.locator("#mailbox-rita .tl-mailbox-logged").inner_text().strip() == "1":
            break
        page.wait_for_timeout(500)
    assert page.locator("#mailbox-rita .tl-mailbox-logged").inner_text().strip() == "1"
    assert "Syncing" in page.locator("#mailbox-rita").inner_text()
    page.screenshot(path=str(OUTPUT_DIR / "mailbox-connected.png"), full_page=True)

    # on the contact's timeline, with its text: the mailbox is private, and Rita owns it
    with sqlite_db.sessions() as session:
        contact_id = session.scalar(
            select(ContactEmail.contact_id).where(ContactEmail.email == "carla@client.example")
        )
    page.goto(f"{url}/admin/records/contact/{contact_id}")
    timeline = page.inner_text("#timeline")
    assert "Ready to sign" in timeline and "We are ready to sign the contract." in timeline
    page.screenshot(path=str(OUTPUT_DIR / "mailbox-timeline.png"), full_page=True)
