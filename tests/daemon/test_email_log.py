"""models.email_log on SQLite and PostgreSQL: filing one email exactly once on the right records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from models.activities import log_activity
from models.db import transaction
from models.deals import move_deal_to_stage
from models.domains import company_domain_of
from models.email_log import (
    link_email_to_deal,
    pending_quarantine,
    quarantine_message,
    record_email,
    record_emails,
    resolve_quarantine,
)
from models.errors import DomainError
from models.messages import (
    Address,
    Attachment,
    Direction,
    Email,
    EmailToRecord,
    MessageBody,
    MessageHeaders,
    MessageRef,
    NewContact,
    Outcome,
    Placement,
)
from models.schema import (
    Activity,
    ActivityKind,
    Company,
    Contact,
    ContactEmail,
    Deal,
    EmailSighting,
    QuarantinedMessage,
    SeenMessage,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW, stage_named

_uids = iter(range(1, 1_000_000))


OUTCOME_LOGGED, OUTCOME_DUPLICATE, OUTCOME_QUARANTINED = (
    Outcome.LOGGED,
    Outcome.DUPLICATE,
    Outcome.QUARANTINED,
)


def email(
    message_id: str = "<m1@mail.test>",
    *,
    subject: str = "Proposal",
    in_reply_to: tuple[str, ...] = (),
    references: tuple[str, ...] = (),
    sent_at: datetime | None = NOW - timedelta(hours=1),
    text: str = "Hi Pat,\nhere is the proposal.\n",
    attachments: tuple[Attachment, ...] = (),
) -> Email:
    headers = MessageHeaders(
        message_id=message_id,
        subject=subject,
        date=sent_at,
        from_=(Address("Jane Rep", "jane@team.example"),),
        sender=(),
        reply_to=(),
        to=(Address("Pat Prospect", "pat@acme.example"),),
        cc=(),
        bcc=(),
        in_reply_to=in_reply_to,
        references=references,
    )
    body = MessageBody(
        text=text, html="<p>Hi Pat</p>", snippet="Hi Pat, here is the proposal.", attachments=attachments
    )
    return Email(headers, body, content_key=f"mid:{message_id}")


def to(*addresses: str, create: bool = True, direction: str = "out", freemail: bool = False) -> Placement:
    """Where matching would file an email: create the addresses as contacts, or link them as known ones."""
    new = tuple(
        NewContact(
            a,
            "Pat Prospect" if a.startswith("pat@") else "",
            None if freemail else company_domain_of(a.split("@")[1]),
        )
        for a in addresses
    )
    return Placement(
        direction=Direction(direction),
        link=() if create else addresses,
        create=new if create else (),
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
    attachment = Attachment("quote.pdf", "application/pdf", 4, b"%PDF")
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


def test_recording_never_decides_a_placement_naming_a_contact_that_is_gone_is_set_aside(
    session: Session,
) -> None:
    outcome = record_email(
        session, email(), to("pat@acme.example", create=False, direction="in"), ref=ref(), now=NOW
    )
    session.commit()
    assert outcome.outcome == OUTCOME_QUARANTINED and outcome.reason is not None
    assert outcome.reason.startswith("contact gone: pat@acme.example")
    assert count(session, Activity) == 0 and count(session, Contact) == 0
    assert count(session, SeenMessage) == 0  # the caller quarantines it with its raw bytes


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


# ---- a batch at once --------------------------------------------------------------------------------------


def test_a_batch_is_filed_at_once_as_if_one_message_at_a_time(
    session: Session,
    make_user: Callable[..., Any],
    make_contact: Callable[..., Any],
    make_deal: Callable[..., Any],
) -> None:
    jane = make_user("jane@team.example", name="Jane Rep")
    kim = make_contact("Kim", email="kim@globex.example")
    renewal = make_deal("Globex renewal", contacts=[kim])
    pat = make_contact("Pat", email="pat@acme.example")
    make_deal("Acme one", contacts=[pat])
    make_deal("Acme two", contacts=[pat])
    later = NOW - timedelta(minutes=30)
    batch = [
        EmailToRecord(email("<b1@x>"), to("kim@globex.example", "lee@initech.example"), ref()),
        # a reply later in the same batch, to Pat (two open deals): the thread decides
        EmailToRecord(
            email("<b2@x>", in_reply_to=("<b1@x>",), sent_at=later),
            to("pat@acme.example", "lee@initech.example"),
            ref(),
        ),
        EmailToRecord(email("<b1@x>"), to("kim@globex.example"), ref(folder="Sent")),  # the same message
        EmailToRecord(email("<b3@x>"), to("who@else.example", create=False, direction="in"), ref()),
        EmailToRecord(email("<b4@x>"), to("pat@acme.example"), ref()),
    ]
    outcomes = record_emails(session, batch, now=NOW, owner=jane).outcomes
    session.commit()

    assert [o.outcome for o in outcomes] == [
        OUTCOME_LOGGED, OUTCOME_LOGGED, OUTCOME_DUPLICATE, OUTCOME_QUARANTINED, OUTCOME_LOGGED,
    ]  # fmt: skip
    first, reply, copy, _, other = outcomes
    assert (first.deal_id, first.contacts_created, first.companies_created) == (renewal.id, 1, 1)
    assert (reply.deal_id, reply.contacts_created, reply.needs_deal_review) == (renewal.id, 0, False)
    assert copy.activity_id == first.activity_id
    assert other.deal_id is None and other.needs_deal_review
    assert (count(session, Activity), count(session, Contact)) == (3, 3)
    assert session.scalar(select(func.count()).where(Company.name == "Initech")) == 1

    session.expire_all()
    lee = session.scalar(
        select(Contact).join(ContactEmail).where(ContactEmail.email == "lee@initech.example")
    )
    assert lee is not None and lee.owner_id == jane.id and lee.company is not None
    assert lee.company.name == "Initech" and lee.last_activity_at == later
    activity = session.get(Activity, first.activity_id)
    assert activity is not None and activity.author_id == jane.id
    assert sorted(c.name for c in activity.contacts) == ["Kim", "Lee"]
    assert sorted(s.folder for s in activity.sightings) == ["INBOX", "Sent"]
    renewal_now = session.get(Deal, renewal.id)
    assert renewal_now is not None and renewal_now.last_activity_at == later
    kim_now = session.get(Contact, kim.id)
    assert kim_now is not None and kim_now.last_activity_at == NOW - timedelta(hours=1)
    outcomes_seen = sorted(session.scalars(select(SeenMessage.outcome)))
    assert outcomes_seen == sorted([OUTCOME_LOGGED] * 3 + [OUTCOME_DUPLICATE])


def test_a_batch_costs_the_same_statements_for_five_messages_as_for_fifty(
    db: TestDatabase,
) -> None:
    """The point of batching: on PostgreSQL every statement is a network round trip."""

    def statements_for(n: int, tag: str) -> int:
        batch = [
            EmailToRecord(
                email(f"<{tag}{i}@x>", attachments=(Attachment("a.txt", "text/plain", 1, b"a"),)),
                to(f"p{i}@{tag}{i % 3}.example", "pat@acme.example"),
                ref(),
            )
            for i in range(n)
        ]
        executed: list[str] = []

        def count_statement(*args: Any) -> None:
            executed.append(args[2])

        event.listen(db.engine, "before_cursor_execute", count_statement)
        try:
            with transaction(db.sessions) as session:
                outcomes = record_emails(session, batch, now=NOW).outcomes
        finally:
            event.remove(db.engine, "before_cursor_execute", count_statement)
        assert [o.outcome for o in outcomes] == [OUTCOME_LOGGED] * n
        return len(executed)

    statements_for(1, "warm")  # pat and acme.example exist from here on, as in a running sync
    assert statements_for(50, "big") == statements_for(5, "small")


# ---- linking by hand --------------------------------------------------------------------------------------


def test_a_person_links_an_email_waiting_for_review_to_any_deal_even_a_won_one(
    session: Session,
    make_user: Callable[..., Any],
    make_contact: Callable[..., Any],
    make_deal: Callable[..., Any],
) -> None:
    boss = make_user("boss@team.example", name="Boss")
    pat = make_contact("Pat", email="pat@acme.example")
    make_deal("One", contacts=[pat])
    make_deal("Two", contacts=[pat])
    won = make_deal("Signed last year", contacts=[pat])
    move_deal_to_stage(session, won, stage_named(session, "Won"), now=NOW - timedelta(days=30))
    session.commit()
    outcome = record_email(session, email(), to("pat@acme.example"), ref=ref(), now=NOW)
    session.commit()
    activity = session.get(Activity, outcome.activity_id)
    assert activity is not None and activity.needs_deal_review and activity.deal_id is None

    link_email_to_deal(session, activity, won, now=NOW, by=boss)
    session.commit()
    session.expire_all()
    linked = session.get(Activity, outcome.activity_id)
    assert linked is not None and (linked.deal_id, linked.needs_deal_review) == (won.id, False)
    deal = session.get(Deal, won.id)
    assert deal is not None and deal.last_activity_at == NOW - timedelta(hours=1)


def test_linking_never_moves_a_deal_into_the_future_nor_back(
    session: Session, make_deal: Callable[..., Any]
) -> None:
    deal = make_deal("Renewal")
    ahead = record_email(
        session, email("<ahead@x>", sent_at=NOW + timedelta(hours=12)), to("pat@acme.example"), ref=ref(),
        now=NOW,
    )  # fmt: skip
    old = record_email(
        session,
        email("<old@x>", sent_at=NOW - timedelta(days=90)),
        to("pat@acme.example"),
        ref=ref(),
        now=NOW,
    )
    session.commit()
    for outcome in (ahead, old):
        activity = session.get(Activity, outcome.activity_id)
        assert activity is not None and activity.deal_id is None
        link_email_to_deal(session, activity, deal, now=NOW, by=None)
    session.commit()
    session.refresh(deal)
    # the email dated 12 h ahead counts as now; the 90-day-old one changes nothing
    assert deal.last_activity_at == NOW


def test_only_emails_are_linked_this_way(
    session: Session, make_contact: Callable[..., Any], make_deal: Callable[..., Any]
) -> None:
    pat = make_contact("Pat", email="pat@acme.example")
    note = log_activity(
        session, kind=ActivityKind.NOTE, occurred_at=NOW, now=NOW, subject="Call", contacts=[pat]
    )
    with pytest.raises(DomainError, match="only an email"):
        link_email_to_deal(session, note, make_deal("Renewal"), now=NOW, by=None)


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


# SQLite takes the write lock up front, so two writers cannot interleave: a PostgreSQL-only race
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_daemons_racing_on_one_message_make_one_activity_and_one_contact(db: TestDatabase) -> None:
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


# SQLite takes the write lock up front, so two writers cannot interleave: a PostgreSQL-only race
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_daemons_racing_on_overlapping_batches_make_each_record_once(db: TestDatabase) -> None:
    first_batch = [
        EmailToRecord(email("<r1@x>"), to("pat@acme.example", "lee@acme.example"), ref("jane")),
        EmailToRecord(email("<r2@x>"), to("kim@globex.example"), ref("jane")),
    ]
    # the same two messages in the other order from bob's mailbox, one more, and one more new contact
    second_batch = [
        EmailToRecord(email("<r3@x>"), to("kim@globex.example", "zoe@acme.example"), ref("bob")),
        EmailToRecord(email("<r2@x>"), to("kim@globex.example"), ref("bob")),
        EmailToRecord(email("<r1@x>"), to("lee@acme.example", "pat@acme.example"), ref("bob")),
    ]
    results: dict[str, Any] = {}
    with transaction(db.sessions) as first:
        results["a"] = record_emails(first, first_batch, now=NOW).outcomes

        def second() -> None:
            with transaction(db.sessions) as other:
                results["b"] = record_emails(other, second_batch, now=NOW).outcomes

        thread = threading.Thread(target=second)
        thread.start()
        _wait_for_lock_wait(db)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert [o.outcome for o in results["a"]] == [OUTCOME_LOGGED, OUTCOME_LOGGED]
    assert [o.outcome for o in results["b"]] == [OUTCOME_LOGGED, OUTCOME_DUPLICATE, OUTCOME_DUPLICATE]
    assert results["b"][2].activity_id == results["a"][0].activity_id
    with db.sessions() as session:
        assert (count(session, Activity), count(session, Contact), count(session, Company)) == (3, 4, 2)
        assert sorted(session.scalars(select(ContactEmail.email))) == [
            "kim@globex.example", "lee@acme.example", "pat@acme.example", "zoe@acme.example",
        ]  # fmt: skip
        activity = session.get(Activity, results["a"][0].activity_id)
        assert activity is not None and activity.mailboxes == ["bob", "jane"]
        assert len(activity.contacts) == 2


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


def test_a_new_contact_joins_the_company_owning_the_most_specific_of_its_domains(
    session: Session, make_company: Callable[..., Any]
) -> None:
    acme = make_company("Acme", domain="acme.example")
    europe = make_company("Acme Europe", domain="eu.acme.example")
    record_email(session, email("<d1@x>"), to("lee@mail.eu.acme.example"), ref=ref(), now=NOW)
    record_email(session, email("<d2@x>"), to("kim@us.acme.example"), ref=ref(), now=NOW)
    record_email(session, email("<d3@x>"), to("zoe@sales.initech.example"), ref=ref(), now=NOW)
    session.commit()
    companies = dict(session.execute(select(ContactEmail.email, Contact.company_id).join(Contact)).all())
    assert companies["lee@mail.eu.acme.example"] == europe.id
    assert companies["kim@us.acme.example"] == acme.id
    initech = session.scalar(select(Company).where(Company.id == companies["zoe@sales.initech.example"]))
    assert initech is not None and initech.name == "Initech"
    assert [d.domain for d in initech.domains] == ["initech.example"]
