"""Webhooks end to end against a real HTTP receiver on loopback: events written with the change, signed,
delivered at least once, caught up after the receiver was down, paused after the retry period, task.due
once, and nothing written when nobody listens."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.webhooks import WebhookSender
from models.activities import create_task, log_activity
from models.contacts import create_contact
from models.deals import create_deal, find_pipeline, find_stage, move_deal_to_stage
from models.schema import WebhookDelivery, WebhookEvent, WebhookSubscription
from models.secrets import SecretBox, generate_key
from models.webhooks import EVENT_TYPES, subscribe
from settings import ApiSettings
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW


class Clock:
    """The sender's clock: starts at the wall clock (events made by the session hooks are stamped with it)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self):  # type: ignore[no-untyped-def]
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([generate_key()])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sender(db: TestDatabase, box: SecretBox, clock: Clock):  # type: ignore[no-untyped-def]
    made = WebhookSender(db.sessions, ApiSettings(webhook_timeout_seconds=2.0), box, now_fn=clock)
    yield made
    made.close()


def subscribed(session: Session, box: SecretBox, url: str, events=EVENT_TYPES) -> str:  # type: ignore[no-untyped-def]
    _, secret = subscribe(session, target_url=url, events=events, box=box, now=NOW)
    session.commit()
    return secret


def verified(received, secret: str) -> dict:  # type: ignore[no-untyped-def]
    """The event a request carried, after checking its signature the way a receiver must."""
    timestamp = received.headers["Threadline-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["Threadline-Signature"], "v1=" + expected)
    event = json.loads(received.body)
    assert received.headers["Threadline-Event-Id"] == event["id"]
    return event


def test_changes_become_signed_events_delivered_to_the_receiver(
    db, session, box, sender, receiver, make_user, make_email
):
    secret = subscribed(session, box, receiver.url)
    rep = make_user()
    jane = create_contact(session, name="Jane Roe", now=NOW, emails=["jane@acme.example"], owner=rep)
    pipeline = find_pipeline(session, "Sales")
    deal = create_deal(session, title="Acme pilot", now=NOW, pipeline=pipeline, contacts=[jane], owner=rep)
    session.commit()
    move_deal_to_stage(session, deal, find_stage(pipeline, "Won"), now=NOW, by=rep)
    log_activity(session, kind="call", occurred_at=NOW, now=NOW, subject="Kickoff", deal=deal, author=rep)
    jane.title = "CTO"
    session.commit()
    make_email(
        "jane@acme.example", subject="Contract", text="Signed copy attached"
    )  # logged by the sync's path

    result = sender.run_once()
    assert result.failed == 0 and result.delivered == len(receiver.requests)
    events = [verified(r, secret) for r in receiver.requests]
    types = [e["type"] for e in events]
    # sent in parallel: receivers get no order, each event carries its time
    assert sorted(types) == sorted(
        ["contact.created", "deal.created", "deal.stage_changed", "deal.won", "activity.logged",
         "contact.updated", "activity.logged"]
    ), types  # fmt: skip
    assert len({e["id"] for e in events}) == len(events)
    won = next(e for e in events if e["type"] == "deal.won")
    assert (won["data"]["id"], won["data"]["status"], won["data"]["stage"]) == (deal.id, "won", "Won")
    emails = [e for e in events if e["type"] == "activity.logged" and e["data"]["kind"] == "email"]
    assert len(emails) == 1 and emails[0]["data"]["body"] is None  # an email's text never travels
    assert sender.run_once().delivered == 0  # delivered once


def test_delivery_catches_up_after_the_receiver_was_down(db, session, box, sender, receiver, clock):
    secret = subscribed(session, box, receiver.url, ["contact.created"])
    receiver.stop()
    for n in range(3):
        create_contact(session, name=f"Lead {n}", now=NOW, emails=[f"lead{n}@x.example"])
    session.commit()
    down = sender.run_once()
    assert (down.delivered, down.failed) == (0, 3)
    with db.sessions() as fresh:
        assert fresh.scalar(select(func.max(WebhookDelivery.attempts))) == 1
        assert "ConnectionError" in fresh.scalars(select(WebhookDelivery.last_error)).first()
    receiver.start()
    assert sender.run_once().delivered == 0  # not due yet: backoff
    clock.advance(timedelta(seconds=31))
    assert sender.run_once().delivered == 3
    names = [verified(r, secret)["data"]["name"] for r in receiver.requests]
    assert sorted(names) == ["Lead 0", "Lead 1", "Lead 2"]


def test_an_event_is_enqueued_once_when_its_transaction_is_retried(db, session, box, receiver):
    subscribed(session, box, receiver.url, ["contact.created"])
    for attempt in range(2):
        with db.sessions() as tx:
            create_contact(tx, name="Jane", now=NOW, emails=["jane@acme.example"])
            tx.flush()
            if attempt == 0:
                tx.rollback()  # e.g. a serialization failure: the caller retries the whole transaction
                continue
            tx.commit()
    with db.sessions() as check:
        assert check.scalar(select(func.count(WebhookEvent.id))) == 1
        assert check.scalar(select(func.count(WebhookDelivery.id))) == 1


def test_a_receiver_failing_for_the_retry_period_pauses_the_subscription(
    db, session, box, sender, receiver, clock, make_user, login
):
    subscribed(session, box, receiver.url, ["contact.created"])
    receiver.status = 500
    create_contact(session, name="Jane", now=NOW, emails=["jane@acme.example"])
    session.commit()
    event_time = session.scalar(select(WebhookEvent.created_at))
    session.rollback()  # end this read: the sender writes meanwhile
    assert sender.run_once().failed == 1
    clock.advance(event_time + timedelta(hours=24, minutes=1) - clock())
    assert sender.run_once().paused == 1
    with db.sessions() as check:
        subscription = check.scalars(select(WebhookSubscription)).one()
        assert "failed for 24 h" in subscription.paused_reason and "HTTP 500" in subscription.paused_reason
    clock.advance(timedelta(hours=2))
    before = len(receiver.requests)
    assert sender.run_once().delivered + sender.run_once().failed == 0  # paused: nothing sent
    assert len(receiver.requests) == before
    page = login(make_user(role="admin")).get("/admin/webhooks/")
    assert "failed for 24 h" in page.text and "Resume" in page.text


def test_task_due_is_announced_once(db, session, box, sender, receiver, clock, make_user):
    secret = subscribed(session, box, receiver.url, ["task.due"])
    task = create_task(
        session, title="Call back", now=NOW, due_at=clock() + timedelta(minutes=5), assignee=make_user()
    )
    session.commit()
    assert sender.run_once().delivered == 0
    clock.advance(timedelta(minutes=6))
    assert sender.run_once().delivered == 1
    assert sender.run_once().delivered == 0
    event = verified(receiver.requests[0], secret)
    assert (event["type"], event["data"]["id"]) == ("task.due", task.id)


def test_nothing_is_written_when_nobody_listens(db, session, make_email):
    create_contact(session, name="Jane", now=NOW, emails=["jane@acme.example"])
    session.commit()
    make_email("jane@acme.example")
    assert session.scalar(select(func.count(WebhookEvent.id))) == 0
