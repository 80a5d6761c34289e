"""The alert rules and the once-per-stall decision, on SQLite and PostgreSQL, with time passed as `now`."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from models.activities import complete_task, create_task, log_activity, touch
from models.db import make_engine, make_sessionmaker, transaction
from models.deals import move_deal_to_stage
from models.notifications import AlertPolicy, decide_notifications
from models.rules import overdue_tasks, stalled_deals, waiting_leads
from models.schema import Activity, ActivityKind, Direction, Notification, Task
from settings import AlertSettings
from tests.fixtures.factories import stage_named

DAY = timedelta(days=1)


def stalled(session, now, default=14, alertable_only=True, **kw):
    return stalled_deals(
        session, now=now, default_stall_days=default, alertable_only=alertable_only, **kw
    ).items


def stalled_titles(session, now, default=14, **kw):
    return [d.title for d in stalled(session, now, default, **kw)]


def test_deal_stalls_after_default_days_without_activity(session, make_deal, make_user, now):
    owner = make_user()
    make_deal(title="Fresh", owner=owner, created_at=now - 13 * DAY)
    make_deal(title="Quiet", owner=owner, created_at=now - 14 * DAY, value="2500")
    [quiet] = stalled(session, now)
    assert (quiet.title, quiet.stage_name, quiet.days_since_touch, quiet.value) == (
        "Quiet",
        "Qualified",
        14,
        2500,
    )
    assert (quiet.last_touch_at, quiet.stalled_since, quiet.last_activity_at) == (now - 14 * DAY, now, None)
    assert stalled_titles(session, now, default=10) == ["Quiet", "Fresh"]  # most stalled first


def test_stage_stall_days_override_the_default(session, make_deal, make_user, now):
    owner = make_user()
    stage_named(session, "Demo").stall_days = 3
    session.commit()
    make_deal(title="Demo waiting", stage="Demo", owner=owner, created_at=now - 3 * DAY)
    make_deal(title="Qualified waiting", stage="Qualified", owner=owner, created_at=now - 3 * DAY)
    [demo] = stalled(session, now)
    assert (demo.title, demo.stall_days, demo.stalled_since) == ("Demo waiting", 3, now)


def test_activity_and_stage_change_reset_the_stall(session, make_deal, make_user, now):
    owner = make_user()
    called = make_deal(title="Called", owner=owner, created_at=now - 30 * DAY)
    moved = make_deal(title="Moved", owner=owner, created_at=now - 30 * DAY)
    done = make_deal(title="Task done", owner=owner, created_at=now - 30 * DAY)
    mailed = make_deal(title="Mailed", owner=owner, created_at=now - 30 * DAY)
    assert stalled_titles(session, now) == ["Called", "Moved", "Task done", "Mailed"]

    log_activity(session, kind="call", occurred_at=now - 2 * DAY, now=now, subject="Call", deal=called)
    move_deal_to_stage(session, moved, stage_named(session, "Demo"), now=now - 2 * DAY)
    task = create_task(session, title="Send pricing", now=now - 5 * DAY, deal=done, assignee=owner)
    complete_task(session, task, now=now - 2 * DAY)
    email = Activity(
        kind=ActivityKind.EMAIL,
        direction=Direction.IN,
        occurred_at=now - 2 * DAY,
        created_at=now,
        subject="Re: pricing",
        deal=mailed,
    )
    session.add(email)
    touch([mailed], email.occurred_at)  # what the sync's email logging does
    session.commit()

    assert stalled_titles(session, now) == []
    later = stalled(session, now + 12 * DAY)
    assert [(d.title, d.last_touch_at) for d in later] == [
        (t, now - 2 * DAY) for t in ("Called", "Moved", "Task done", "Mailed")
    ]


def test_won_and_lost_deals_never_stall(session, make_deal, make_user, now):
    owner = make_user()
    make_deal(title="Won long ago", stage="Won", owner=owner, created_at=now - 90 * DAY)
    make_deal(title="Lost long ago", stage="Lost", owner=owner, created_at=now - 90 * DAY)
    assert stalled_titles(session, now, alertable_only=False) == []


def test_opted_out_muted_excluded_and_ownerless_are_not_alertable(session, make_deal, make_user, now):
    owner = make_user()
    make_deal(title="Alerted", owner=owner, created_at=now - 20 * DAY)
    make_deal(title="Opted out", owner=make_user(alerts_enabled=False), created_at=now - 20 * DAY)
    make_deal(title="Deactivated owner", owner=make_user(active=False), created_at=now - 20 * DAY)
    make_deal(title="Muted", owner=owner, created_at=now - 20 * DAY, alerts_muted=True)
    make_deal(title="No owner", created_at=now - 20 * DAY)
    stage_named(session, "Negotiation").alerts_excluded = True
    session.commit()
    make_deal(title="Excluded stage", stage="Negotiation", owner=owner, created_at=now - 20 * DAY)

    assert stalled_titles(session, now) == ["Alerted"]
    assert len(stalled_titles(session, now, alertable_only=False)) == 6


def test_a_deal_stalls_exactly_when_its_stall_days_have_passed(session, make_deal, make_user, now):
    owner = make_user()
    at_boundary = make_deal("At boundary", owner=owner, created_at=now - 14 * DAY)
    make_deal("A second short", owner=owner, created_at=now - 14 * DAY + timedelta(seconds=1))
    [deal] = stalled(session, now)
    assert (deal.deal_id, deal.stall_days, deal.stalled_since, deal.last_touch_at) == (
        at_boundary.id,
        14,
        now,
        now - 14 * DAY,
    )
    assert stalled(session, now, default=15) == []


def test_most_stalled_first_across_stages_with_a_total_beyond_the_limit(session, make_deal, make_user, now):
    owner = make_user()
    stage_named(session, "Proposal").stall_days = 5
    session.commit()
    for days in (1, 5, 6, 13, 14, 40):
        make_deal(f"Qualified {days}", owner=owner, created_at=now - days * DAY)
        make_deal(f"Proposal {days}", owner=owner, stage="Proposal", created_at=now - days * DAY)
    listing = stalled_deals(session, now=now, default_stall_days=14, limit=4)
    # stalled since: Proposal 40 (35 days ago), Qualified 40 (26), Proposal 14 (9), Proposal 13 (8), ...
    assert [d.title for d in listing.items] == ["Proposal 40", "Qualified 40", "Proposal 14", "Proposal 13"]
    assert listing.total == 2 + 5
    everything = stalled_deals(session, now=now, default_stall_days=14)
    # then Proposal 6 (1 day ago), and two that stalled this very moment, in the order they were created
    assert [d.title for d in everything.items][4:] == ["Proposal 6", "Proposal 5", "Qualified 14"]
    assert everything.total == 7
    assert [d.stalled_since for d in everything.items] == sorted(d.stalled_since for d in everything.items)


def test_overdue_tasks_alert_the_assignee_until_done(session, make_deal, make_user, now):
    rep = make_user()
    deal = make_deal(title="Acme", owner=rep)
    late = create_task(
        session, title="Call back Acme", now=now - 5 * DAY, due_at=now - 2 * DAY, assignee=rep, deal=deal
    )
    create_task(session, title="Future", now=now, due_at=now + DAY, assignee=rep)
    create_task(session, title="No due date", now=now, assignee=rep)
    create_task(session, title="Nobody's", now=now, due_at=now - DAY)
    session.commit()
    [task] = overdue_tasks(session, now=now, alertable_only=True)
    assert (task.title, task.assignee_id, task.days_overdue, task.deal_title) == (
        "Call back Acme",
        rep.id,
        2,
        "Acme",
    )
    complete_task(session, late, now=now)
    session.commit()
    assert overdue_tasks(session, now=now, alertable_only=True) == []
    assert [t.title for t in overdue_tasks(session, now=now)] == ["Nobody's"]


def test_waiting_leads_are_new_contacts_nobody_reached(session, make_contact, make_user, now):
    rep = make_user()
    waiting = make_contact(
        name="Wanda Waiting", email="wanda@lead.example", owner=rep, created_at=now - 30 * timedelta(hours=1)
    )
    called = make_contact(name="Carl Called", owner=rep, created_at=now - 30 * timedelta(hours=1))
    mailed = make_contact(name="Mona Mailed", owner=rep, created_at=now - 30 * timedelta(hours=1))
    wrote_in = make_contact(name="Ian Inbound", owner=rep, created_at=now - 30 * timedelta(hours=1))
    late = make_contact(name="Larry Late", owner=rep, created_at=now - 40 * timedelta(hours=1))
    make_contact(name="Too new", owner=rep, created_at=now - 2 * timedelta(hours=1))
    make_contact(name="Old contact", owner=rep, created_at=now - 20 * DAY)
    make_contact(name="Nobody's lead", created_at=now - 30 * timedelta(hours=1))
    log_activity(
        session,
        kind="call",
        occurred_at=called.created_at + timedelta(hours=2),
        now=now,
        subject="Intro",
        contacts=[called],
    )
    # reached, but only after the response time: still reported (the lead waited too long)
    log_activity(
        session,
        kind="meeting",
        occurred_at=late.created_at + timedelta(hours=30),
        now=now,
        subject="Late intro",
        contacts=[late],
    )
    for contact, direction in ((mailed, Direction.OUT), (wrote_in, Direction.IN)):
        email = Activity(
            kind=ActivityKind.EMAIL,
            direction=direction,
            occurred_at=now - DAY,
            created_at=now,
            subject="Hello",
        )
        email.contacts.append(contact)
        session.add(email)
    session.commit()

    leads = waiting_leads(
        session, now=now, window=14 * DAY, response=timedelta(hours=24), alertable_only=True
    ).items
    assert [(lead.name, lead.email, lead.hours_waiting) for lead in leads] == [
        ("Larry Late", late.primary_email, 40),
        ("Wanda Waiting", "wanda@lead.example", 30),
        ("Ian Inbound", wrote_in.primary_email, 30),
    ]
    assert waiting.owner_id == rep.id


def policy(**kw):
    return AlertPolicy.of(AlertSettings(**{"stall_days": 14, "remind_every_days": 7, **kw}))


def decide(db, now, **kw):
    with transaction(db.sessions) as s:
        return [d.key for d in decide_notifications(s, now=now, policy=policy(**kw)).decided]


def test_one_alert_per_stall_then_reminders_then_a_new_stall(db, session, make_deal, make_user, now):
    deal = make_deal(title="Acme", owner=make_user(), created_at=now - 14 * DAY)
    first = decide(db, now)
    assert len(first) == 1 and first[0].startswith(f"stalled:{deal.id}:")
    assert decide(db, now) == [] and decide(db, now + 6 * DAY) == []
    reminder = decide(db, now + 7 * DAY)
    assert len(reminder) == 1 and reminder[0].rsplit(":", 1)[0] == first[0].rsplit(":", 1)[0]
    assert decide(db, now + 13 * DAY) == []

    log_activity(
        session, kind="note", occurred_at=now + 8 * DAY, now=now + 8 * DAY, subject="Nudged", deal=deal
    )
    session.commit()
    assert decide(db, now + 21 * DAY) == []
    new_stall = decide(db, now + 22 * DAY)
    assert len(new_stall) == 1 and new_stall[0].rsplit(":", 1)[0] != first[0].rsplit(":", 1)[0]
    assert session.scalar(select(func.count(Notification.id))) == 3


def test_follow_up_task_created_once_per_stall(db, session, make_deal, make_user, now):
    owner = make_user()
    deal = make_deal(title="Globex", owner=owner, created_at=now - 20 * DAY)
    decide(db, now, create_tasks=True)
    decide(db, now, create_tasks=True)
    decide(db, now + 7 * DAY, create_tasks=True)  # a reminder, not a second task
    tasks = session.scalars(select(Task).where(Task.deal_id == deal.id)).all()
    assert [(t.title, t.assignee_id, t.due_at) for t in tasks] == [
        ("Follow up on stalled deal: Globex", owner.id, now)
    ]


def test_concurrent_decisions_record_each_alert_once(db, session, make_deal, make_user, now):
    owner = make_user()
    for _ in range(30):
        make_deal(owner=owner, created_at=now - 20 * DAY)
    barrier = threading.Barrier(2)
    decided: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        engine = make_engine(db.url)
        try:
            barrier.wait()
            with transaction(make_sessionmaker(engine)) as s:
                decided.append(len(decide_notifications(s, now=now, policy=policy()).decided))
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(decided) == 30 and len(decided) == 2
    assert session.scalar(select(func.count(Notification.id))) == 30
