"""models.email_log on SQLite and PostgreSQL: filing one email exactly once on the right records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models.db import transaction
from models.deals import move_deal_to_stage
from models.email_log import (
    OUTCOME_DUPLICATE,
    OUTCOME_LOGGED,
    OUTCOME_QUARANTINED,
    OUTCOME_SKIPPED,
    ContactCandidate,
    EmailAttachmentData,
    EmailData,
    EmailPlacement,
    MessageRef,
    pending_quarantine,
    quarantine_message,
    record_email,
    resolve_quarantine,
)
from models.schema import (
    Activity,
    Company,
    Contact,
    ContactEmail,
    EmailSighting,
    QuarantinedMessage,
    SeenMessage,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW, stage_named

_uids = iter(range(1, 1_000_000))


def email(
    message_id: str = "<m1@mail.test>",
    *,
    subject: str = "Proposal",
    in_reply_to: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
    sent_at: datetime | None = NOW - timedelta(hours=1),
    **overrides: Any,
) -> EmailData:
    values: dict[str, Any] = dict(
        content_key=f"mid:{message_id}",
        message_id=message_id,
        subject=subject,
        sent_at=sent_at,
        from_address="Jane Rep <jane@team.example>",
        to_addresses=("Pat Prospect <pat@acme.example>",),
        cc_addresses=(),
        in_reply_to=in_reply_to,
        references=references,
        text="Hi Pat,\nhere is the proposal.\n",
        html="<p>Hi Pat</p>",
        snippet="Hi Pat, here is the proposal.",
        attachments=(),
        truncated=False,
    )
    values.update(overrides)
    return EmailData(**values)


def to(
    *addresses: str, create: bool = True, direction: str = "out", freemail: bool = False
) -> EmailPlacement:
    return EmailPlacement(
        direction=direction,
        candidates=tuple(
            ContactCandidate(
                a,
                "Pat Prospect" if a.startswith("pat@") else "",
                create,
                None if freemail else a.split("@")[1],
            )
            for a in addresses
        ),
        author_email="jane@team.example" if direction == "out" else None,
    )


def ref(mailbox: str = "jane", folder: str = "INBOX") -> MessageRef:
    return MessageRef(mailbox, folder, 1, next(_uids))


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_outbound_email_creates_contact_company_and_activity(
    session: Session, make_user: Callable[..., Any]
) -> None:
    jane = make_user("jane@team.example", name="Jane Rep")
    attachment = EmailAttachmentData("quote.pdf", "application/pdf", 4, b"%PDF")
    outcome = record_email(
        session, email(attachments=(attachment,)), to("pat@acme.example"), ref=ref(), now=NOW, owner=jane
    )
    session.commit()
    assert (
        outcome.outcome == OUTCOME_LOGGED and outcome.contacts_created == 1 and outcome.companies_created == 1
    )

    pat = session.scalar(select(Contact).join(ContactEmail).where(ContactEmail.email == "pat@acme.example"))
    assert pat is not None and pat.name == "Pat Prospect" and pat.owner_id == jane.id
    assert pat.company is not None and pat.company.name == "Acme"
    activity = session.get(Activity, outcome.activity_id)
    assert activity is not None
    assert (
        activity.subject == "Proposal"
        and activity.direction is not None
        and activity.direction.value == "out"
    )
    assert activity.author_id == jane.id and activity.company_id == pat.company_id
    assert [c.id for c in activity.contacts] == [pat.id]
    assert activity.occurred_at == NOW - timedelta(hours=1)
    assert activity.thread_key == "<m1@mail.test>"
    assert [(a.filename, a.size, a.content) for a in activity.attachments] == [("quote.pdf", 4, b"%PDF")]
    assert activity.mailboxes == ["jane"]
    assert pat.last_activity_at == NOW - timedelta(hours=1)
    assert pat.company.last_activity_at == NOW - timedelta(hours=1)
    seen = session.scalars(select(SeenMessage)).all()
    assert [(s.outcome, s.activity_id) for s in seen] == [(OUTCOME_LOGGED, activity.id)]


def test_the_same_email_in_two_mailboxes_is_one_activity_listing_both(session: Session) -> None:
    first = record_email(session, email(), to("pat@acme.example"), ref=ref("jane"), now=NOW)
    second = record_email(session, email(), to("pat@acme.example"), ref=ref("bob"), now=NOW)
    in_sent = record_email(session, email(), to("pat@acme.example"), ref=ref("bob", "Sent"), now=NOW)
    session.commit()
    assert first.outcome == OUTCOME_LOGGED
    assert second.outcome == in_sent.outcome == OUTCOME_DUPLICATE
    assert second.activity_id == first.activity_id
    assert count(session, Activity) == 1 and count(session, Contact) == 1
    session.expire_all()  # sightings were added with bulk inserts: read them as a new page view would
    activity = session.get(Activity, first.activity_id)
    assert activity is not None and activity.mailboxes == ["bob", "jane"]
    assert count(session, EmailSighting) == 3
    assert count(session, SeenMessage) == 3


def test_recording_the_same_copy_twice_adds_nothing(session: Session) -> None:
    where = ref()
    record_email(session, email(), to("pat@acme.example"), ref=where, now=NOW)
    again = record_email(session, email(), to("pat@acme.example"), ref=where, now=NOW)
    session.commit()
    assert again.outcome == OUTCOME_DUPLICATE
    assert (count(session, Activity), count(session, EmailSighting), count(session, SeenMessage)) == (1, 1, 1)


def test_freemail_contacts_get_no_company(session: Session) -> None:
    outcome = record_email(session, email(), to("pat@gmail.com", freemail=True), ref=ref(), now=NOW)
    session.commit()
    contact = session.scalar(select(Contact))
    assert outcome.outcome == OUTCOME_LOGGED and contact is not None
    assert contact.company_id is None and contact.name == "Pat Prospect"
    assert count(session, Company) == 0


def test_unknown_address_that_may_not_be_created_is_skipped(session: Session) -> None:
    outcome = record_email(
        session, email(), to("pat@acme.example", create=False, direction="in"), ref=ref(), now=NOW
    )
    session.commit()
    assert outcome.outcome == OUTCOME_SKIPPED
    assert count(session, Activity) == 0 and count(session, Contact) == 0
    assert session.scalar(select(SeenMessage.outcome)) == OUTCOME_SKIPPED


def test_name_comes_from_the_address_when_there_is_no_display_name(session: Session) -> None:
    record_email(session, email(), to("lee.hughes@other.example"), ref=ref(), now=NOW)
    session.commit()
    assert session.scalar(select(Contact.name)) == "Lee Hughes"


def test_absurd_dates_become_now(session: Session) -> None:
    future = record_email(session, email("<f@x>", sent_at=NOW + timedelta(days=400)), to("a@acme.example"),
                          ref=ref(), now=NOW)  # fmt: skip
    missing = record_email(session, email("<g@x>", sent_at=None), to("a@acme.example"), ref=ref(), now=NOW)
    session.commit()
    for outcome in (future, missing):
        activity = session.get(Activity, outcome.activity_id)
        assert activity is not None and activity.occurred_at == NOW


def test_nul_bytes_and_huge_subjects_are_stored_on_every_database(session: Session) -> None:
    outcome = record_email(
        session, email(subject="x" * 5000, text="a\x00b"), to("pat@acme.example"), ref=ref(), now=NOW
    )
    session.commit()
    activity = session.get(Activity, outcome.activity_id)
    assert activity is not None and len(activity.subject) == 998 and activity.body == "ab"


# ---- deals ------------------------------------------------------------------------------------------------


def test_thread_reply_goes_to_the_deal_of_the_thread(
    session: Session, make_contact: Callable[..., Any], make_deal: Callable[..., Any]
) -> None:
    pat = make_contact("Pat", email="pat@acme.example")
    deal = make_deal("Acme renewal", contacts=[pat])
    make_deal("Acme upsell", contacts=[pat])  # two open deals: only the thread can decide
    first = record_email(session, email("<a@x>"), to("pat@acme.example"), ref=ref(), now=NOW)
    assert first.needs_deal_review and first.deal_id is None
    # staff file the first email on the renewal; the reply follows it
    activity = session.get(Activity, first.activity_id)
    assert activity is not None
    activity.deal_id = deal.id
    session.commit()
    reply = record_email(
        session, email("<b@x>", in_reply_to=("<a@x>",), references=("<a@x>",)), to("pat@acme.example"),
        ref=ref(), now=NOW,
    )  # fmt: skip
    session.commit()
    assert reply.deal_id == deal.id and not reply.needs_deal_review
    reloaded = session.get(Activity, reply.activity_id)
    assert reloaded is not None and reloaded.thread_key == "<a@x>"
    session.refresh(deal)
    assert deal.last_activity_at == NOW - timedelta(hours=1)


def test_single_open_deal_of_a_contact_then_of_the_company(
    session: Session,
    make_company: Callable[..., Any],
    make_contact: Callable[..., Any],
    make_deal: Callable[..., Any],
) -> None:
    acme = make_company("Acme", domain="acme.example")
    pat = make_contact("Pat", email="pat@acme.example", company=acme)
    deal = make_deal("Acme renewal", contacts=[pat], company=acme)
    by_contact = record_email(session, email("<c1@x>"), to("pat@acme.example"), ref=ref(), now=NOW)
    # kim is new: created with Acme as company, and Acme has exactly one open deal
    by_company = record_email(session, email("<c2@x>"), to("kim@acme.example"), ref=ref(), now=NOW)
    session.commit()
    assert by_contact.deal_id == deal.id
    assert by_company.deal_id == deal.id and by_company.contacts_created == 1


def test_several_candidate_deals_leave_the_deal_empty_for_review(
    session: Session,
    make_company: Callable[..., Any],
    make_contact: Callable[..., Any],
    make_deal: Callable[..., Any],
) -> None:
    acme = make_company("Acme", domain="acme.example")
    make_contact("Pat", email="pat@acme.example", company=acme)
    make_deal("One", company=acme)
    make_deal("Two", company=acme)
    outcome = record_email(session, email(), to("pat@acme.example"), ref=ref(), now=NOW)
    session.commit()
    activity = session.get(Activity, outcome.activity_id)
    assert activity is not None and activity.deal_id is None and activity.needs_deal_review


def test_won_deals_get_no_new_mail(
    session: Session, make_contact: Callable[..., Any], make_deal: Callable[..., Any]
) -> None:
    pat = make_contact("Pat", email="pat@acme.example")
    deal = make_deal("Closed", contacts=[pat])
    first = record_email(session, email("<w1@x>"), to("pat@acme.example"), ref=ref(), now=NOW)
    assert first.deal_id == deal.id
    move_deal_to_stage(session, deal, stage_named(session, "Won"), now=NOW)
    session.commit()
    reply = record_email(session, email("<w2@x>", in_reply_to=("<w1@x>",)), to("pat@acme.example"), ref=ref(),
                         now=NOW)  # fmt: skip
    session.commit()
    assert reply.deal_id is None and not reply.needs_deal_review


# ---- quarantine -------------------------------------------------------------------------------------------


def test_quarantine_counts_attempts_and_resolves(session: Session) -> None:
    where = ref()
    quarantine_message(session, where, raw=b"garbage", reason="cannot parse", message_id=None, now=NOW)
    session.commit()
    assert pending_quarantine(session, "jane", now=NOW) == []  # not due yet
    due = pending_quarantine(session, "jane", now=NOW + timedelta(minutes=5))
    assert [p.ref for p in due] == [where]
    quarantine_message(session, where, raw=b"garbage", reason="still broken", message_id=None, now=NOW)
    session.commit()
    row = session.scalar(select(QuarantinedMessage))
    assert row is not None and row.attempts == 2 and row.reason == "still broken" and row.raw == b"garbage"
    assert session.scalar(select(SeenMessage.outcome)) == OUTCOME_QUARANTINED
    assert resolve_quarantine(session, where, now=NOW)
    session.commit()
    assert pending_quarantine(session, "jane", now=NOW + timedelta(days=30)) == []


# ---- races between two daemons (PostgreSQL: SQLite serializes writers) ----------------------------------


def test_two_daemons_racing_on_one_message_make_one_activity_and_one_contact(db: TestDatabase) -> None:
    if db.kind == "sqlite":
        pytest.skip("SQLite takes the write lock up front: two writers cannot interleave")
    results: dict[str, Any] = {}
    with transaction(db.sessions) as first:
        results["a"] = record_email(first, email(), to("pat@acme.example"), ref=ref("jane"), now=NOW)

        def second() -> None:
            with transaction(db.sessions) as other:
                results["b"] = record_email(other, email(), to("pat@acme.example"), ref=ref("bob"), now=NOW)

        thread = threading.Thread(target=second)
        thread.start()
        _wait_for_lock_wait(db)
        # leaving the block commits the first transaction; the second one then hits the unique keys
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert results["a"].outcome == OUTCOME_LOGGED
    assert results["b"].outcome == OUTCOME_DUPLICATE and results["b"].activity_id == results["a"].activity_id
    with db.sessions() as session:
        assert count(session, Activity) == 1 and count(session, Contact) == 1 and count(session, Company) == 1
        activity = session.get(Activity, results["a"].activity_id)
        assert activity is not None and activity.mailboxes == ["bob", "jane"]


def _wait_for_lock_wait(db: TestDatabase) -> None:
    deadline = time.monotonic() + 10
    with db.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar()
            if waiting:
                return
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError("the second writer never waited on the first")
