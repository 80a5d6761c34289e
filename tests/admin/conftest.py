"""Fixtures for the admin panel's tests: the app on the test database, logged-in clients, an email helper."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from admin.app import create_app
from models.email_log import record_email
from models.messages import Attachment, Direction, MessageRef, Placement
from models.schema import Activity, User
from settings import AdminSettings, DatabaseSettings, Secret, Settings
from tests.fixtures.database import TestDatabase
from tests.fixtures.emails import stored_email
from tests.fixtures.factories import NOW

PASSWORD = "correct horse battery"
CSRF_INPUT = re.compile(r'name="csrf_token"\s+value="([^"]+)"')

# run a test on SQLite only (the `db` fixture otherwise runs it on PostgreSQL too)
sqlite_only = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def fresh(session: Session) -> None:
    """See the app's commits: end the test session's transaction and forget the objects it loaded."""
    session.rollback()
    session.expire_all()


def settings_for(url: str) -> Settings:
    return Settings(
        source="test",
        database=DatabaseSettings(url=url),
        admin=AdminSettings(secret_key=Secret("t" * 48, "test")),
    )


@pytest.fixture
def app(db: TestDatabase) -> Iterator[Flask]:
    application = create_app(settings_for(db.url), db.sessions, clock=lambda: NOW)
    application.config["TESTING"] = True  # CSRF stays ON: tests send real tokens
    yield application


def csrf_from(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "no csrf_token on the page"
    return found.group(1)


@dataclass
class Browser:
    """A test client that logged in through the real form, remembering its CSRF token."""

    client: FlaskClient
    token: str

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.client.post(url, data={"csrf_token": self.token, **(data or {})}, **kwargs)

    def post_json(self, url: str, body: dict[str, Any]) -> Any:
        return self.client.post(url, json=body, headers={"X-CSRFToken": self.token})


def log_in(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_from(page.text)}
    )


@pytest.fixture
def login(app: Flask) -> Callable[[User], Browser]:
    def make(user: User) -> Browser:
        client = app.test_client()
        response = log_in(client, user.email)
        assert response.status_code == 302, response.text[:500]
        page = client.get("/admin/notifications/")
        return Browser(client, csrf_from(page.text))

    return make


@pytest.fixture
def make_email(session: Session) -> Callable[..., Activity]:
    """An email filed the way the sync files it (models.email_log.record_email), seen in these mailboxes."""
    counter = iter(range(1, 1_000_000))

    def make(
        to: str,
        *,
        subject: str = "Pricing question",
        text: str = "Hello, what would 50 seats cost?",
        html: str | None = None,
        mailboxes: tuple[str, ...] = ("sales",),
        direction: str = "in",
        attachments: tuple[Attachment, ...] = (),
        sent_at: datetime = NOW,
    ) -> Activity:
        n = next(counter)
        email = stored_email(
            content_key=f"test-{n}-{subject}",
            message_id=f"<m{n}@client.example>",
            subject=subject,
            sent_at=sent_at,
            from_address=to if direction == "in" else "rep@team.example",
            to_addresses=("rep@team.example",) if direction == "in" else (to,),
            text=text,
            html=html,
            attachments=attachments,
        )
        placement = Placement(direction=Direction(direction), link=(to,))
        outcome = None
        for i, mailbox in enumerate(mailboxes):
            ref = MessageRef(mailbox=mailbox, folder="INBOX", uidvalidity=1, uid=n * 10 + i)
            outcome = record_email(session, email, placement, ref=ref, now=NOW)
        session.commit()
        assert outcome is not None and outcome.activity_id is not None, outcome
        activity = session.get(Activity, outcome.activity_id)
        assert activity is not None
        return activity

    return make
