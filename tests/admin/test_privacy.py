"""Private mailboxes: others see that an email happened, only the owner (and admins when allowed) read it.

The rule (models.privacy) on its own, then what each role sees and may download in the panel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.app import create_app
from models.mailboxes import MailboxFields, create_mailbox, remove_mailbox
from models.messages import Attachment
from models.privacy import PrivacyPolicy, body_access, can_read_body
from models.schema import Activity, QuarantinedMessage, Role, User
from models.secrets import SecretBox, generate_key
from settings import MailboxSettings, Sharing
from tests.admin.conftest import Browser, csrf_from, fresh, log_in, settings_for
from tests.fixtures.factories import NOW

PRIVATE_TEXT = "Our budget is 40k, keep it between us"
SHARED_TEXT = "Happy to join the demo on Tuesday"


@pytest.fixture
def team(session: Session, make_user: Callable[..., User]) -> dict[str, User]:
    return {
        "jane": make_user("jane@team.example", name="Jane Owner"),
        "bob": make_user("bob@team.example", name="Bob Colleague"),
        "admin": make_user("boss@team.example", name="Ada Admin", role=Role.ADMIN),
    }


@pytest.fixture
def mailboxes(session: Session, team: dict[str, User]) -> SecretBox:
    """'jane' is Jane's private mailbox, 'sales' a shared one."""
    box = SecretBox([generate_key()])
    for name, owner, sharing in (
        ("jane", "jane@team.example", Sharing.PRIVATE),
        ("sales", None, Sharing.SHARED),
    ):
        fields = MailboxFields(
            name=name, host="imap.team.example", username=name, owner=owner, sharing=sharing
        )
        create_mailbox(session, fields, password="pw", box=box, providers={}, now=NOW)
    session.commit()
    return box


@pytest.fixture
def emails(make_email, make_contact, mailboxes) -> dict[str, Activity]:  # type: ignore[no-untyped-def]
    make_contact("Carla Client", email="client@client.example")
    return {
        "private": make_email(
            "client@client.example",
            subject="Budget for next year",
            text=PRIVATE_TEXT,
            html=f"<p>{PRIVATE_TEXT}</p>",
            mailboxes=("jane",),
            attachments=(Attachment("budget.xlsx", "application/octet-stream", 9, b"secret 40"),),
        ),
        "both": make_email(
            "client@client.example", subject="Demo", text=SHARED_TEXT, mailboxes=("jane", "sales")
        ),
    }


def test_the_rule_each_viewer_and_the_query_filter_agree(session, team, emails) -> None:
    policy = PrivacyPolicy()
    private, both = emails["private"], emails["both"]
    assert can_read_body(session, team["jane"], private, policy)
    assert not can_read_body(session, team["bob"], private, policy)
    assert not can_read_body(session, team["admin"], private, policy)
    assert can_read_body(session, team["admin"], private, replace(policy, admins_read_private=True))
    assert not can_read_body(session, None, private, policy)
    for viewer in (*team.values(), None):
        assert can_read_body(session, viewer, both, policy)  # a shared mailbox saw it too
    for viewer in team.values():
        access = body_access(session, viewer, policy)
        readable = set(session.scalars(select(Activity.id).where(access.readable())))
        assert readable == {a.id for a in session.scalars(select(Activity)) if access.can_read(a)}


def test_a_private_mailbox_of_the_config_file_counts_too(session, team, make_email, make_contact) -> None:
    make_contact("Carla Client", email="client@client.example")
    email = make_email("client@client.example", mailboxes=("lee",))
    config = MailboxSettings(
        name="lee", host="imap", username="lee", owner="jane@team.example", sharing=Sharing.PRIVATE
    )
    policy = PrivacyPolicy((config,))
    assert can_read_body(session, team["jane"], email, policy)
    assert not can_read_body(session, team["bob"], email, policy)
    assert can_read_body(
        session, team["bob"], email, PrivacyPolicy((replace(config, sharing=Sharing.SHARED),))
    )


def test_removing_a_private_mailbox_keeps_its_mail_private(session, team, emails, mailboxes) -> None:
    remove_mailbox(session, "jane", box=mailboxes, now=NOW)
    session.commit()
    assert not can_read_body(session, team["bob"], emails["private"], PrivacyPolicy())
    assert can_read_body(session, team["jane"], emails["private"], PrivacyPolicy())


# ---- the panel ------------------------------------------------------------------------------------------


def contact_page(browser: Browser, email: Activity, *, open_: bool = False) -> str:
    contact_id = email.contacts[0].id
    suffix = f"?open={email.id}" if open_ else ""
    response = browser.get(f"/admin/records/contact/{contact_id}{suffix}")
    assert response.status_code == 200
    return str(response.text)


def attachment_url(email: Activity) -> str:
    return f"/admin/records/attachment/{email.attachments[0].id}"


def test_a_colleague_sees_that_it_happened_but_not_the_message(session, team, emails, login) -> None:
    private = emails["private"]
    bob = login(team["bob"])
    page = contact_page(bob, private)
    assert "Budget for next year" in page and "client@client.example" in page  # it happened
    assert PRIVATE_TEXT not in page and "budget.xlsx" not in page
    assert "only the mailbox&#39;s owner reads this message" in page or "only the mailbox's owner" in page
    assert SHARED_TEXT in page  # seen in the shared mailbox too
    opened = contact_page(bob, private, open_=True)
    assert PRIVATE_TEXT not in opened
    assert bob.get(attachment_url(private)).status_code == 403
    listing = bob.get("/admin/activity/export/csv/")
    assert "Budget for next year" in listing.text and PRIVATE_TEXT not in listing.text


def test_the_owner_reads_everything(session, team, emails, login) -> None:
    private = emails["private"]
    jane = login(team["jane"])
    assert PRIVATE_TEXT in contact_page(jane, private)
    assert PRIVATE_TEXT in contact_page(jane, private, open_=True)
    download = jane.get(attachment_url(private))
    assert download.status_code == 200 and download.data == b"secret 40"


def test_admins_read_private_mail_only_when_the_setting_allows(db, session, team, emails, login) -> None:
    private = emails["private"]
    quarantined = QuarantinedMessage(
        mailbox="jane", folder="INBOX", uidvalidity=1, uid=99, reason="test", raw=b"Subject: x\r\n\r\nsecret",
        attempts=1, created_at=NOW, last_attempt_at=NOW,
    )  # fmt: skip
    session.add(quarantined)
    session.commit()
    admin = login(team["admin"])
    assert PRIVATE_TEXT not in contact_page(admin, private, open_=True)
    assert admin.get(attachment_url(private)).status_code == 403
    assert admin.get(f"/admin/sync/quarantine/{quarantined.id}.eml").status_code == 403

    settings = settings_for(db.url)
    allowing = create_app(
        replace(settings, admin=replace(settings.admin, admins_read_private=True)),
        db.sessions,
        clock=lambda: NOW,
    )
    allowing.config["TESTING"] = True
    fresh(session)
    client = allowing.test_client()
    assert log_in(client, "boss@team.example").status_code == 302
    browser = Browser(client, csrf_from(client.get("/admin/notifications/").text))
    assert PRIVATE_TEXT in contact_page(browser, private, open_=True)
    assert browser.get(attachment_url(private)).status_code == 200
    assert browser.get(f"/admin/sync/quarantine/{quarantined.id}.eml").status_code == 200
