"""The API as a trigger of earlier mail, against a real Dovecot: a contact or a company domain created through
the API queues its relink in the same transaction (models.contacts), and the relink logs the mail."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from daemon.relink import relink_history
from daemon.sync import sync_mailbox
from models.schema import Activity, RelinkRequest, Role
from tests.daemon.conftest import build_message, make_mailbox, make_settings, parser_for, team_of
from tests.fixtures.dovecot import dovecot, mailbox_user
from tests.fixtures.factories import NOW

__all__ = ["dovecot", "mailbox_user", "make_mailbox", "parser_for"]  # fixtures this module uses


def test_contacts_and_domains_made_through_the_api_get_their_earlier_mail(
    db, make_user, api_client, dovecot, make_mailbox, parser_for
):
    box = make_mailbox("jane")
    settings = make_settings(box, db_url=db.url)
    dovecot.append(box.username, "INBOX", [
        build_message(from_="jo@acme.example", to="jane@team.example", subject="Jo", date=NOW - timedelta(2)),
        build_message(from_="lee@initech.example", to="jane@team.example", subject="Lee asks"),
    ])  # fmt: skip
    team, parser = team_of(settings), parser_for(settings.matching)
    synced = sync_mailbox(
        box, db.sessions, matching=settings.matching, team=team, parser=parser, now_fn=lambda: NOW
    )
    assert synced.skipped == 2

    api = api_client(make_user(role=Role.MANAGER))
    assert api.post("/api/v1/contacts", {"email": "jo@acme.example", "name": "Jo"}).status_code == 201
    made = api.post("/api/v1/companies", {"name": "Initech", "domains": ["initech.example"]})
    assert made.status_code == 201, made.text
    with db.sessions() as session:
        queued = session.execute(select(RelinkRequest.address, RelinkRequest.domain)).all()
    assert sorted(queued, key=str) == sorted([("jo@acme.example", None), (None, "initech.example")], key=str)

    result = relink_history(
        settings.mailboxes,
        db.sessions,
        matching=settings.matching,
        team=team,
        parser=parser,
        now_fn=lambda: NOW,
    )
    assert (result.errors, result.logged) == ([], 2)
    with db.sessions() as session:
        assert sorted(session.scalars(select(Activity.subject))) == ["Jo", "Lee asks"]
