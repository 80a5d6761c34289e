"""The Mailboxes page: admins add, edit, pause and remove mailboxes; a rep sees and connects their own
(authorization code with PKCE against the local authorization server); config-file mailboxes are read-only;
reconnect needed is shown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.app import create_app
from daemon.credentials import MailboxCredentials
from models.mailboxes import MailboxFields, create_mailbox, mark_reconnect_needed
from models.schema import GrantFlow, GrantState, Mailbox, MailboxStatus, Notification, OAuthGrant, Role, User
from models.secrets import SecretBox, generate_key
from settings import MailboxAuth, MailboxSettings, Secret, SecretsSettings, Sharing
from tests.admin.conftest import Browser, csrf_from, fresh, log_in, settings_for
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW
from tests.fixtures.oauth_server import OAuthTestServer, provider_settings
from threadline.mailboxes import PanelConnector

KEY = generate_key()
CONFIG_MAILBOX = MailboxSettings(name="from-file", host="imap.team.example", username="files")


@pytest.fixture
def local_client(oauth_server: OAuthTestServer):  # type: ignore[no-untyped-def]
    return oauth_server.add_client(
        secret="s3cret",
        redirect_uris=("http://localhost/admin/mailboxes/callback",),
        grant_types=("authorization_code", "refresh_token"),
    )


@pytest.fixture
def app(db: TestDatabase, oauth_server: OAuthTestServer, local_client) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    base = settings_for(db.url)
    settings = replace(
        base,
        mailboxes=(CONFIG_MAILBOX,),
        secrets=SecretsSettings(key=Secret(KEY, "test")),
        oauth={"local": provider_settings(oauth_server, local_client)},
    )
    credentials = MailboxCredentials(db.sessions, box=SecretBox([KEY]), providers=settings.oauth)
    application = create_app(settings, db.sessions, clock=lambda: NOW, connector=PanelConnector(credentials))
    application.config["TESTING"] = True
    yield application


@pytest.fixture
def people(make_user: Callable[..., User]) -> dict[str, User]:
    return {
        "admin": make_user("ada@team.example", name="Ada Admin", role=Role.ADMIN),
        "rep": make_user("rita@team.example", name="Rita Rep"),
        "other": make_user("otto@team.example", name="Otto Other"),
    }


def browser_for(app: Flask, user: User) -> Browser:
    client = app.test_client()
    assert log_in(client, user.email).status_code == 302
    return Browser(client, csrf_from(client.get("/admin/notifications/").text))


def add_form(**overrides: str) -> dict[str, str]:
    form = {
        "name": "rita-mail", "host": "imap.team.example", "port": "993", "security": "ssl",
        "username": "rita@team.example", "auth": "password", "provider": "", "password": "hunter2-secret",
        "folders": "INBOX, Sent", "owner": "rita@team.example", "address": "rita@team.example",
        "poll_seconds": "120", "idle": "on", "sharing": "private",
    }  # fmt: skip
    form.update(overrides)
    return form


def test_an_admin_adds_edits_pauses_and_removes_a_mailbox(app, session: Session, people) -> None:
    admin = browser_for(app, people["admin"])
    assert admin.client.post("/admin/mailboxes/new", data=add_form()).status_code == 400  # no CSRF token
    response = admin.post("/admin/mailboxes/new", data=add_form())
    assert response.status_code == 302
    fresh(session)
    stored = session.scalar(select(Mailbox).where(Mailbox.name == "rita-mail"))
    assert stored is not None and stored.poll_seconds == 120 and stored.folders == ["INBOX", "Sent"]
    assert stored.password_encrypted and "hunter2-secret" not in stored.password_encrypted
    page = admin.get("/admin/mailboxes/").text
    assert "rita-mail" in page and "Private" in page and "hunter2-secret" not in page

    bad = admin.post("/admin/mailboxes/new", data=add_form(name="second", port="abc"))
    assert bad.status_code == 200 and "port: must be a whole number" in bad.text

    edit_page = admin.get("/admin/mailboxes/rita-mail/edit").text
    assert "hunter2-secret" not in edit_page and "Leave empty to keep the stored one" in edit_page
    changed = admin.post("/admin/mailboxes/rita-mail/edit", data=add_form(poll_seconds="300", password=""))
    assert changed.status_code == 302
    fresh(session)
    stored = session.scalar(select(Mailbox).where(Mailbox.name == "rita-mail"))
    assert stored is not None and stored.poll_seconds == 300 and stored.password_encrypted  # kept

    admin.post("/admin/mailboxes/rita-mail/pause")
    assert "Paused" in admin.get("/admin/mailboxes/").text
    admin.post("/admin/mailboxes/rita-mail/resume")
    removed = admin.post("/admin/mailboxes/rita-mail/remove", follow_redirects=True)
    assert "The mail it logged stays" in removed.text
    assert "rita-mail" not in admin.get("/admin/mailboxes/").text.split("mailbox-list")[1]


def test_config_file_mailboxes_are_read_only(app, people) -> None:
    admin = browser_for(app, people["admin"])
    page = admin.get("/admin/mailboxes/").text
    assert "from-file" in page and "config file" in page
    assert "/admin/mailboxes/from-file/edit" not in page
    assert admin.get("/admin/mailboxes/from-file/edit").status_code == 404
    assert admin.post("/admin/mailboxes/from-file/remove").status_code == 404


def test_a_rep_sees_only_their_mailboxes_and_changes_none(app, session, people) -> None:
    box = SecretBox([KEY])
    for name, owner in (("rita-mail", "rita@team.example"), ("otto-mail", "otto@team.example")):
        create_mailbox(
            session, MailboxFields(name=name, host="imap.team.example", username=name, owner=owner),
            password="pw", box=box, providers={}, now=NOW,
        )  # fmt: skip
    session.commit()
    rep = browser_for(app, people["rep"])
    page = rep.get("/admin/mailboxes/").text
    assert "rita-mail" in page and "otto-mail" not in page and "Add mailbox" not in page
    assert rep.get("/admin/mailboxes/new").status_code == 403
    assert rep.post("/admin/mailboxes/otto-mail/pause").status_code == 403
    assert rep.post("/admin/mailboxes/rita-mail/remove").status_code == 403
    assert rep.post("/admin/mailboxes/otto-mail/connect").status_code == 403


def test_a_rep_connects_their_mailbox_and_sees_reconnect_needed(
    app, session, people, oauth_server: OAuthTestServer
) -> None:
    oauth_server.add_user("rita")
    create_mailbox(
        session,
        MailboxFields(
            name="rita-oauth", host="127.0.0.1", port=1993, security="none", username="rita",
            auth=MailboxAuth.OAUTH, provider="local", owner="rita@team.example",
        ),
        box=SecretBox([KEY]), providers=app.extensions["threadline"].settings.oauth, now=NOW,
    )  # fmt: skip
    session.commit()
    rep = browser_for(app, people["rep"])
    assert "Connect mailbox" in rep.get("/admin/mailboxes/").text
    assert 'name="sharing"' in rep.get("/admin/mailboxes/").text  # the choice is shown when connecting
    start = rep.post("/admin/mailboxes/rita-oauth/connect", data={"sharing": "private"})
    assert start.status_code == 302 and start.location.startswith(oauth_server.url("/authorize"))
    assert "code_challenge_method=S256" in start.location
    back = oauth_server.approve(start.location, "rita")
    done = rep.get(back.replace("http://localhost", ""), follow_redirects=True)
    assert "Mailbox rita-oauth connected" in done.text
    fresh(session)
    grant = session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == "rita-oauth"))
    assert (
        grant is not None and grant.state is GrantState.ACTIVE and grant.flow is GrantFlow.AUTHORIZATION_CODE
    )
    stored = session.scalar(select(Mailbox).where(Mailbox.name == "rita-oauth"))
    assert stored is not None and stored.sharing is Sharing.PRIVATE
    assert (
        rep.get(back.replace("http://localhost", ""), follow_redirects=True).text.count("not started here")
        == 1
    )

    mark_reconnect_needed(session, "rita-oauth", reason="invalid_grant", now=NOW + timedelta(hours=1))
    session.commit()
    page = rep.get("/admin/mailboxes/").text
    assert "Reconnect needed" in page and "invalid_grant" in page and "Connect again" in page
    owners = {
        n.user_id
        for n in session.scalars(select(Notification).where(Notification.kind == "reconnect_needed"))
    }
    assert owners == {people["rep"].id, people["admin"].id}  # the owner and the admins, not Otto
    admin_browser = browser_for(app, people["admin"])
    session.add(MailboxStatus(mailbox="rita-oauth", consecutive_failures=1, last_error="needs reconnecting"))
    session.commit()
    assert "Reconnect needed" in admin_browser.get("/admin/sync/").text
    home = rep.get("/", follow_redirects=True).text
    assert "Your mailbox <strong>rita-oauth</strong> needs reconnecting" in home
    assert "needs reconnecting" not in browser_for(app, people["other"]).get("/", follow_redirects=True).text


def test_a_refused_consent_connects_nothing(app, session, people, oauth_server) -> None:
    oauth_server.add_user("rita2")
    create_mailbox(
        session,
        MailboxFields(
            name="rita2", host="127.0.0.1", port=1993, security="none", username="rita2",
            auth=MailboxAuth.OAUTH, provider="local", owner="rita@team.example",
        ),
        box=SecretBox([KEY]), providers=app.extensions["threadline"].settings.oauth, now=NOW,
    )  # fmt: skip
    session.commit()
    rep = browser_for(app, people["rep"])
    start = rep.post("/admin/mailboxes/rita2/connect")
    back = oauth_server.approve(start.location, "rita2", allow=False)
    done = rep.get(back.replace("http://localhost", ""), follow_redirects=True)
    assert "Mailbox rita2 not connected" in done.text
    fresh(session)
    assert session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == "rita2")) is None


# ---- a rep connects a brand-new mailbox of their own -----------------------------------------------------


@pytest.fixture
def own_app(db: TestDatabase, oauth_server: OAuthTestServer, local_client) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    """Two providers on the local authorization server: a Microsoft 365 preset (its IMAP host known) and a
    generic one without an IMAP host (not offered for connecting a new mailbox)."""
    microsoft = replace(
        provider_settings(oauth_server, local_client, name="m365", preset="microsoft"),
        imap_host="outlook.office365.com",
    )
    settings = replace(
        settings_for(db.url),
        secrets=SecretsSettings(key=Secret(KEY, "test")),
        oauth={"m365": microsoft, "local": provider_settings(oauth_server, local_client)},
    )
    credentials = MailboxCredentials(db.sessions, box=SecretBox([KEY]), providers=settings.oauth)
    application = create_app(settings, db.sessions, clock=lambda: NOW, connector=PanelConnector(credentials))
    application.config["TESTING"] = True
    yield application


def own_form(**overrides: str) -> dict[str, str]:
    return {"provider": "m365", "address": " Rita@Team.example ", "sharing": "private", **overrides}


def test_a_rep_with_no_mailbox_connects_their_own(own_app, session, people, oauth_server) -> None:
    oauth_server.add_user("rita@team.example")
    rep = browser_for(own_app, people["rep"])
    page = rep.get("/admin/mailboxes/").text
    assert "No mailbox of yours yet" in page and "Connect my mailbox" in page
    assert '<option value="m365">Microsoft 365</option>' in page
    assert 'value="local"' not in page.split("connect-own-form")[1]  # generic without imap_host: not offered
    assert rep.client.post("/admin/mailboxes/connect-own", data=own_form()).status_code == 400  # no CSRF

    # someone else as owner is not a field: the mailbox is the rep's whatever the form says
    start = rep.post("/admin/mailboxes/connect-own", data=own_form(owner="otto@team.example"))
    assert start.status_code == 302 and start.location.startswith(oauth_server.url("/authorize"))
    assert "code_challenge_method=S256" in start.location
    fresh(session)
    assert session.scalar(select(Mailbox)) is None  # nothing added before the consent
    back = oauth_server.approve(start.location, "rita@team.example")
    done = rep.get(back.replace("http://localhost", ""), follow_redirects=True)
    assert "Mailbox rita-team-example connected" in done.text
    fresh(session)
    stored = session.scalar(select(Mailbox).where(Mailbox.name == "rita-team-example"))
    assert stored is not None and stored.owner_id == people["rep"].id
    assert (stored.host, stored.port, stored.security) == ("outlook.office365.com", 993, "ssl")
    assert stored.username == stored.address == "rita@team.example"
    assert stored.auth is MailboxAuth.OAUTH and stored.provider == "m365"
    assert stored.sharing is Sharing.PRIVATE
    grant = session.scalar(select(OAuthGrant).where(OAuthGrant.mailbox == "rita-team-example"))
    assert grant is not None and grant.state is GrantState.ACTIVE
    mine = rep.get("/admin/mailboxes/").text.split("mailbox-list")[1]
    assert "rita-team-example" in mine and "Not connected" not in mine and "Private" in mine
    assert "rita-team-example" not in browser_for(own_app, people["other"]).get("/admin/mailboxes/").text
    assert "rita-team-example" in browser_for(own_app, people["admin"]).get("/admin/mailboxes/").text

    again = rep.post("/admin/mailboxes/connect-own", data=own_form(), follow_redirects=True)
    assert "you already have mailbox &#39;rita-team-example&#39; for rita@team.example" in again.text


def test_a_rep_connecting_their_own_gets_a_unique_name_and_clear_errors(
    own_app, session, people, oauth_server
) -> None:
    oauth_server.add_user("rita@team.example")
    create_mailbox(
        session,
        MailboxFields(
            name="rita-team-example", host="imap.team.example", username="x", owner="otto@team.example"
        ),
        password="pw", box=SecretBox([KEY]), providers={}, now=NOW,
    )  # fmt: skip
    session.commit()
    rep = browser_for(own_app, people["rep"])
    start = rep.post("/admin/mailboxes/connect-own", data=own_form())
    back = oauth_server.approve(start.location, "rita@team.example")
    done = rep.get(back.replace("http://localhost", ""), follow_redirects=True)
    assert "Mailbox rita-team-example-2 connected" in done.text
    fresh(session)
    owners = dict(session.execute(select(Mailbox.name, Mailbox.owner_id)).all())
    assert owners == {"rita-team-example": people["other"].id, "rita-team-example-2": people["rep"].id}
    for form, error in (
        (own_form(address="not an address"), "&#39;not an address&#39; is not an email address"),
        (own_form(provider="local"), "choose one of the providers offered"),
        (own_form(provider="nope"), "choose one of the providers offered"),
    ):
        answer = rep.post("/admin/mailboxes/connect-own", data=form, follow_redirects=True)
        assert answer.status_code == 200 and f"Mailbox not connected: {error}" in answer.text
    assert rep.post("/admin/mailboxes/connect-own", data=own_form(sharing="everyone")).status_code == 400


def test_a_refused_consent_adds_no_mailbox(own_app, session, people, oauth_server) -> None:
    oauth_server.add_user("rita@team.example")
    rep = browser_for(own_app, people["rep"])
    start = rep.post("/admin/mailboxes/connect-own", data=own_form())
    back = oauth_server.approve(start.location, "rita@team.example", allow=False)
    done = rep.get(back.replace("http://localhost", ""), follow_redirects=True)
    assert "Mailbox rita@team.example not connected, nothing was added" in done.text
    fresh(session)
    assert session.scalar(select(Mailbox)) is None and session.scalar(select(OAuthGrant)) is None
    assert "No mailbox of yours yet" in rep.get("/admin/mailboxes/").text
