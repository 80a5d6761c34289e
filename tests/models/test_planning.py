"""Planned activities, my day and the search everywhere, on SQLite and PostgreSQL, `now` passed in."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from models.activities import (
    complete_task,
    create_task,
    due_state,
    next_activity_for_deals,
    planned_due,
    touch,
)
from models.agenda import my_day
from models.errors import DomainError
from models.rules import deals_without_next_step, overdue_tasks
from models.schema import Activity, ActivityKind, Contact, PlannedKind
from models.search import clean_query, search

DAY = timedelta(days=1)
PARIS = "Europe/Paris"


def test_a_date_without_a_time_is_due_until_the_end_of_that_day_in_the_team_zone():
    due_at, has_time = planned_due(date(2026, 11, 23), None, PARIS)
    assert (due_at, has_time) == (datetime(2026, 11, 23, 22, 59, tzinfo=UTC), False)
    due_at, has_time = planned_due(date(2026, 11, 23), time(9, 30), PARIS)
    assert (due_at, has_time) == (datetime(2026, 11, 23, 8, 30, tzinfo=UTC), True)
    # 10:00 in Paris on the 23rd: the all-day activity is due today, the 9:30 call is overdue
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert due_state(datetime(2026, 11, 23, 22, 59, tzinfo=UTC), False, now, PARIS) == "today"
    assert due_state(datetime(2026, 11, 23, 8, 30, tzinfo=UTC), True, now, PARIS) == "overdue"
    assert due_state(datetime(2026, 11, 24, 8, 30, tzinfo=UTC), True, now, PARIS) == "later"


def test_a_completed_call_is_logged_as_a_call_on_the_deal_contact_and_company(
    session, make_user, make_company, make_contact, make_deal, now
):
    rep = make_user()
    acme = make_company("Acme")
    pat = make_contact("Pat Lee", company=acme)
    deal = make_deal("Acme renewal", company=acme, contacts=[pat], owner=rep)
    call = create_task(
        session, title="Call Pat about seats", now=now, kind="call", deal=deal, contact=pat, assignee=rep
    )
    activity = complete_task(session, call, now=now + DAY, by=rep)
    session.commit()
    assert activity is not None
    assert (activity.kind, activity.subject, activity.deal_id, activity.company_id) == (
        ActivityKind.CALL,
        "Call Pat about seats",
        deal.id,
        acme.id,
    )
    assert [c.id for c in activity.contacts] == [pat.id]
    assert deal.last_activity_at == now + DAY
    # done twice: nothing more is logged
    assert complete_task(session, call, now=now + 2 * DAY) is None
    todo = create_task(session, title="Send the contract", now=now, company=acme, assignee=rep)
    logged = complete_task(session, todo, now=now, by=rep)
    assert logged is not None and (logged.kind, logged.subject) == (
        ActivityKind.TASK,
        "Task done: Send the contract",
    )
    assert logged.company_id == acme.id


def test_a_wrong_type_is_refused_in_words(session, now):
    with pytest.raises(DomainError, match="choose a type: call, meeting, email, to-do"):
        create_task(session, title="x", now=now, kind="lunch")


def test_next_activity_per_deal_and_deals_without_a_next_step(session, make_user, make_deal, now):
    rep, other = make_user(), make_user()
    planned = make_deal("Planned", owner=rep)
    empty = make_deal("Nothing planned", owner=rep)
    done_only = make_deal("Only done things", owner=rep)
    make_deal("Someone else's", owner=other)
    make_deal("Won already", owner=rep, stage="Won")
    create_task(session, title="Undated", now=now, deal=planned)
    create_task(session, title="Later", now=now, deal=planned, due_at=now + 3 * DAY)
    create_task(session, title="Soon", now=now, deal=planned, due_at=now + DAY, kind="meeting")
    finished = create_task(session, title="Finished", now=now, deal=done_only, due_at=now - DAY)
    complete_task(session, finished, now=now)
    session.commit()

    nexts = next_activity_for_deals(session, [planned.id, empty.id, done_only.id])
    assert list(nexts) == [planned.id]
    assert (nexts[planned.id].title, nexts[planned.id].kind) == ("Soon", PlannedKind.MEETING)

    listing = deals_without_next_step(session, owner_id=rep.id)
    assert sorted(d.title for d in listing.items) == ["Nothing planned", "Only done things"]
    assert listing.total == 2
    assert deals_without_next_step(session).total == 3


def test_my_day_lists_my_overdue_and_today_apart_from_the_team(
    session, make_user, make_contact, make_deal, now
):
    rep, other = make_user(name="Rita Rep"), make_user()
    lead = make_contact("Lee Lead", owner=rep, created_at=now - 3 * DAY)
    deal = make_deal("Quiet deal", owner=rep, created_at=now - 30 * DAY)
    # now is 10:00 in Paris
    create_task(session, title="Yesterday's call", now=now, kind="call", due_at=now - DAY, assignee=rep)
    due, has_time = planned_due(now.date(), None, PARIS)
    create_task(session, title="Today, any time", now=now, due_at=due, has_due_time=has_time, assignee=rep)
    create_task(session, title="Next week", now=now, due_at=now + 5 * DAY, assignee=rep, deal=deal)
    create_task(session, title="Not mine", now=now, due_at=now - DAY, assignee=other)
    session.commit()

    day = my_day(
        session,
        user_id=rep.id,
        now=now,
        tz=PARIS,
        default_stall_days=14,
        lead_window=timedelta(days=14),
        lead_response=timedelta(hours=24),
    )
    assert [t.title for t in day.overdue] == ["Yesterday's call"]
    assert [t.title for t in day.today] == ["Today, any time"]
    assert [t.title for t in day.upcoming] == ["Next week"]
    assert [d.title for d in day.stalled.items] == ["Quiet deal"]
    assert day.no_next_step.total == 0  # the quiet deal has next week's task
    assert [w.name for w in day.waiting.items] == [lead.name]
    team = my_day(
        session,
        user_id=None,
        now=now,
        tz=PARIS,
        default_stall_days=14,
        lead_window=timedelta(days=14),
        lead_response=timedelta(hours=24),
    )
    assert sorted(t.title for t in team.overdue) == ["Not mine", "Yesterday's call"]
    # the overdue rule of the alerts and my day agree
    assert {t.title for t in overdue_tasks(session, now=now)} == {t.title for t in team.overdue}


def test_latest_emails_on_my_records_show_no_body(session, make_user, make_contact, make_deal, now):
    rep = make_user()
    mine = make_contact("Mine", owner=rep)
    theirs = make_contact("Theirs")
    for n, contact in enumerate((mine, theirs)):
        email = Activity(
            kind=ActivityKind.EMAIL,
            occurred_at=now - n * DAY,
            subject=f"Subject {contact.name}",
            body="secret body",
            snippet="secret snippet",
            created_at=now,
            from_address="x@client.example",
        )
        email.contacts.append(contact)
        session.add(email)
        touch([contact], email.occurred_at)  # as the sync's record_email does
    session.commit()
    day = my_day(
        session,
        user_id=rep.id,
        now=now,
        tz=PARIS,
        default_stall_days=14,
        lead_window=timedelta(days=14),
        lead_response=timedelta(hours=24),
    )
    assert [(e.subject, e.contact_id) for e in day.emails] == [("Subject Mine", mine.id)]
    assert not hasattr(day.emails[0], "snippet") and not hasattr(day.emails[0], "body")


def test_search_finds_contacts_by_name_address_and_phone_companies_by_domain_and_deals(
    session, make_company, make_contact, make_deal
):
    acme = make_company("Acme Robotics", domain="acme-robotics.example")
    make_company("Globex", domain="globex.example")
    pat = make_contact("Patricia Smithers", email="pat@acme-robotics.example", company=acme)
    make_contact("John Doe", email="jd@elsewhere.example", phone="+33 6 12 34 56 78")
    make_deal("Robotics arm upgrade", company=acme)
    make_deal("Unrelated", company=acme)

    found = search(session, "smith")
    assert [(h.label, h.detail) for h in found.contacts] == [
        ("Patricia Smithers", "pat@acme-robotics.example · Acme Robotics")
    ]
    assert [h.record_id for h in search(session, "PAT@ACME").contacts] == [pat.id]
    assert [h.label for h in search(session, "12 34").contacts] == ["John Doe"]
    robotics = search(session, "robotics")
    assert [h.label for h in robotics.companies] == ["Acme Robotics"]
    assert [h.label for h in robotics.deals] == ["Robotics arm upgrade"]
    assert [h.label for h in search(session, "globex.ex").companies] == ["Globex"]
    # short queries match the start of names
    assert [h.label for h in search(session, "jo").contacts] == ["John Doe"]
    assert search(session, "zzz").empty and search(session, "  ").empty
    # a renamed contact is found by the new name only (the index follows every write)
    pat.name = "Patricia Jones"
    session.commit()
    assert search(session, "smith").contacts == []
    assert [h.label for h in search(session, "jones").contacts] == ["Patricia Jones"]
    session.delete(session.get(Contact, pat.id))
    session.commit()
    assert search(session, "jones").contacts == []
    assert search(session, "pat@acme").contacts == []


def test_search_treats_wildcards_as_text():
    assert clean_query(' 100%_off  "now" ') == "100 off now"
