"""The "Find earlier emails" button on contact and company pages, against a real Dovecot: role-checked, CSRF
protected, it reports what the index holds and the mail lands on the timeline once the relink runs."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import delete

from daemon.relink import relink_history
from daemon.sync import sync_mailbox
from models.schema import RelinkRequest, Role
from tests.admin.conftest import fresh
from tests.daemon.conftest import (
    build_message,
    delivery_failure,
    make_mailbox,
    make_settings,
    message_id_of,
    parser_for,
    team_of,
)
from tests.fixtures.dovecot import dovecot, mailbox_user
from tests.fixtures.factories import NOW

__all__ = ["dovecot", "mailbox_user", "make_mailbox", "parser_for"]  # fixtures this module uses


def test_find_earlier_emails_on_a_contact_and_a_company_page(
    app, db, session, make_user, make_contact, make_company, login, dovecot, make_mailbox, parser_for
):
    box = make_mailbox("jane")
    settings = make_settings(box, db_url=db.url)
    dovecot.append(box.username, "INBOX", [
        build_message(from_="lee@globex.example", to="jane@team.example", subject="Globex pricing",
                      date=NOW - timedelta(days=3)),
        build_message(from_="kim@globex.example", to="jane@team.example", subject="Globex legal review",
                      date=NOW - timedelta(days=2)),
    ])  # fmt: skip
    parser = parser_for(settings.matching)
    synced = sync_mailbox(
        box,
        db.sessions,
        matching=settings.matching,
        team=team_of(settings),
        parser=parser,
        now_fn=lambda: NOW,
    )
    assert synced.skipped == 2
    owner = make_user(role=Role.REP, name="Rita Rep")
    globex = make_company("Globex", domain="globex.example", owner=owner)
    lee = make_contact("Lee", email="lee@globex.example", owner=owner, company=globex)
    session.execute(delete(RelinkRequest))  # as if the daemon had answered the queue meanwhile
    session.commit()

    # another rep may not, and the form needs its CSRF token
    other = login(make_user(role=Role.REP))
    assert "Find earlier emails" not in other.get(f"/admin/records/contact/{lee.id}").text
    assert other.post(f"/admin/records/contact/{lee.id}/earlier").status_code == 403
    rita = login(owner)
    assert rita.client.post(f"/admin/records/contact/{lee.id}/earlier").status_code == 400

    page = rita.get(f"/admin/records/contact/{lee.id}").text
    assert "Find earlier emails" in page
    done = rita.post(f"/admin/records/contact/{lee.id}/earlier", follow_redirects=True).text
    assert "Found 1 earlier email not logged yet" in done
    result = relink_history(
        settings.mailboxes, db.sessions, matching=settings.matching, team=team_of(settings), parser=parser,
        now_fn=lambda: NOW,
    )  # fmt: skip
    assert (result.errors, result.logged) == ([], 1)
    fresh(session)
    assert "Globex pricing" in rita.get(f"/admin/records/contact/{lee.id}").text

    # the company page: Kim is nobody's contact yet; the company's domain finds her mail, and she becomes a
    # contact of the company (a person writing from a company's domain)
    done = rita.post(f"/admin/records/company/{globex.id}/earlier", follow_redirects=True).text
    assert "Found 1 earlier email not logged yet" in done
    result = relink_history(
        settings.mailboxes, db.sessions, matching=settings.matching, team=team_of(settings), parser=parser,
        now_fn=lambda: NOW,
    )  # fmt: skip
    assert (result.found, result.logged, result.contacts_created) == (1, 1, 1)
    fresh(session)
    company_page = rita.get(f"/admin/records/company/{globex.id}").text
    assert "Globex legal review" in company_page and "Globex pricing" in company_page


def test_a_new_address_in_a_deals_thread_is_added_to_the_contact_in_one_click(
    app,
    db,
    session,
    make_user,
    make_contact,
    make_company,
    make_deal,
    login,
    dovecot,
    make_mailbox,
    parser_for,
):
    box = make_mailbox("jane")
    settings = make_settings(box, db_url=db.url)
    owner = make_user(role=Role.REP, name="Rita Rep")
    acme = make_company("Acme", domain="acme.example", owner=owner)
    pat = make_contact("Pat Prospect", email="pat@acme.example", company=acme, owner=owner)
    deal = make_deal("Acme renewal", contacts=[pat], company=acme, owner=owner)
    offer = build_message(from_="jane@team.example", to="pat@acme.example", subject="Renewal offer")
    dovecot.append(box.username, "INBOX", [
        offer,
        build_message(from_="Pat <pat.home@gmail.example>", to="jane@team.example",
                      subject="Re: Renewal offer", in_reply_to=message_id_of(offer),
                      references=[message_id_of(offer)]),
    ])  # fmt: skip
    parser = parser_for(settings.matching)
    synced = sync_mailbox(
        box,
        db.sessions,
        matching=settings.matching,
        team=team_of(settings),
        parser=parser,
        now_fn=lambda: NOW,
    )
    assert synced.logged == 2

    other = login(make_user(role=Role.REP))
    page = other.get(f"/admin/records/deal/{deal.id}").text
    assert "pat.home@gmail.example" in page and "Add as an address of" not in page  # not theirs to edit
    form = {"address": "pat.home@gmail.example", "contact_id": pat.id}
    assert other.post(f"/admin/records/deal/{deal.id}/adopt", form).status_code == 403

    rita = login(owner)
    page = rita.get(f"/admin/records/deal/{deal.id}").text
    assert "Re: Renewal offer" in page and "Add as an address of Pat Prospect" in page
    done = rita.post(f"/admin/records/deal/{deal.id}/adopt", form, follow_redirects=True).text
    assert "pat.home@gmail.example added to Pat Prospect; 1 email(s) of this deal linked." in done
    assert "Add as an address of" not in done
    fresh(session)
    contact_page = rita.get(f"/admin/records/contact/{pat.id}").text
    assert "pat.home@gmail.example" in contact_page and "Re: Renewal offer" in contact_page


def test_a_bounce_shows_on_the_timeline_and_on_the_contact(
    app, db, session, make_user, make_contact, login, dovecot, make_mailbox, parser_for
):
    box = make_mailbox("jane")
    settings = make_settings(box, db_url=db.url)
    pat = make_contact("Pat Prospect", email="pat@acme.example")
    dovecot.append(box.username, "INBOX", [delivery_failure("pat@acme.example")])
    team = team_of(settings)
    parser = parser_for(settings.matching)
    synced = sync_mailbox(
        box, db.sessions, matching=settings.matching, team=team, parser=parser, now_fn=lambda: NOW
    )
    assert synced.logged == 1
    page = login(make_user(role=Role.REP)).get(f"/admin/records/contact/{pat.id}").text
    assert "bounce: not delivered" in page and "Undelivered Mail Returned to Sender" in page
    assert re.search(r"pat@acme.example <span[^>]*>bounced ", page)


def test_a_contact_made_with_the_panels_form_gets_its_earlier_mail(
    app, db, session, make_user, login, dovecot, make_mailbox, parser_for
):
    box = make_mailbox("jane")
    settings = make_settings(box, db_url=db.url)
    dovecot.append(box.username, "INBOX", [build_message(from_="lee@globex.example", to="jane@team.example")])
    team, parser = team_of(settings), parser_for(settings.matching)
    synced = sync_mailbox(
        box, db.sessions, matching=settings.matching, team=team, parser=parser, now_fn=lambda: NOW
    )
    assert synced.skipped == 1
    rep = login(make_user(role=Role.REP))
    made = rep.post("/admin/quick/contact", {"name": "Lee", "emails": "lee@globex.example"})
    assert made.status_code == 302, made.text[:500]
    result = relink_history(
        settings.mailboxes, db.sessions, matching=settings.matching, team=team, parser=parser,
        now_fn=lambda: NOW,
    )  # fmt: skip
    assert (result.errors, result.logged) == ([], 1)
    fresh(session)
    assert "Hello" in rep.get(made.headers["Location"]).text  # on the new contact's timeline
