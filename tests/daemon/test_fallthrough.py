"""Mail that used to fall through, against a real Dovecot on SQLite and PostgreSQL: a reply into a deal's
thread from an address nobody knows, sub-addresses, people writing from a company's domain, and earlier
mail of a domain a company gains."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from daemon.relink import RelinkResult, relink_history
from daemon.sync import SyncResult, sync_mailbox
from models.contacts import set_company_domains, set_contact_emails
from models.db import transaction
from models.history import address_offers, adopt_address
from models.schema import Activity, Company, Contact, ContactEmail, activity_contacts
from settings import MailboxSettings, Settings
from tests.daemon.conftest import (
    MakeMailbox,
    ParserFor,
    build_message,
    delivery_failure,
    make_settings,
    message_id_of,
    team_of,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW

JANE = "Jane Rep <jane@team.example>"


def run_sync(db: TestDatabase, parser_for: ParserFor, settings: Settings) -> SyncResult:
    box: MailboxSettings = settings.mailboxes[0]
    return sync_mailbox(
        box, db.sessions, matching=settings.matching, team=team_of(settings),
        parser=parser_for(settings.matching), now_fn=lambda: NOW,
    )  # fmt: skip


def run_relink(db: TestDatabase, parser_for: ParserFor, settings: Settings) -> RelinkResult:
    return relink_history(
        settings.mailboxes, db.sessions, matching=settings.matching, team=team_of(settings),
        parser=parser_for(settings.matching), now_fn=lambda: NOW,
    )  # fmt: skip


def filed(db: TestDatabase, subject: str) -> tuple[int | None, int | None, list[str]]:
    """(deal id, company id, linked contacts' addresses) of the email with this subject."""
    with db.sessions() as session:
        activity = session.scalar(select(Activity).where(Activity.subject == subject))
        assert activity is not None, f"{subject!r} was not logged"
        emails = sorted(
            session.scalars(
                select(ContactEmail.email)
                .join(activity_contacts, activity_contacts.c.contact_id == ContactEmail.contact_id)
                .where(activity_contacts.c.activity_id == activity.id)
            )
        )
        return activity.deal_id, activity.company_id, emails


def test_a_reply_from_an_unknown_address_goes_to_the_threads_deal_and_the_address_is_offered(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, parser_for: ParserFor,
    make_contact: Callable[..., Any], make_company: Callable[..., Any], make_deal: Callable[..., Any],
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box)
    acme = make_company("Acme", domain="acme.example")
    pat = make_contact("Pat Prospect", email="pat@acme.example", company=acme)
    deal = make_deal("Acme renewal", contacts=[pat], company=acme)
    # earlier, Pat wrote from home about something else: skipped, nobody knew the address
    earlier = build_message(
        from_="Pat <pat.home@gmail.example>", to=JANE, subject="Weekend", date=NOW - timedelta(7)
    )
    offer = build_message(from_=JANE, to="Pat Prospect <pat@acme.example>", subject="Renewal offer")
    reply = build_message(
        from_="Pat <pat.home@gmail.example>", to=JANE, subject="Re: Renewal offer",
        in_reply_to=message_id_of(offer), references=[message_id_of(offer)],
    )  # fmt: skip
    dovecot.append(box.username, "INBOX", [earlier, offer, reply])
    result = run_sync(db, parser_for, settings)
    assert (result.error, result.logged, result.skipped, result.contacts_created) == (None, 2, 1, 0)
    assert filed(db, "Re: Renewal offer") == (deal.id, acme.id, [])

    with transaction(db.sessions) as session:
        offers = address_offers(session, deal.id)
        assert [(o.address, o.contact_ids) for o in offers] == [("pat.home@gmail.example", (pat.id,))]
        contact = session.get(Contact, pat.id)
        assert contact is not None
        assert adopt_address(session, contact, "pat.home@gmail.example", deal_id=deal.id) == 1
    both = ["pat.home@gmail.example", "pat@acme.example"]  # Pat's two addresses
    assert filed(db, "Re: Renewal offer") == (deal.id, acme.id, both)
    # adding it links the rest of that address's mail
    relinked = run_relink(db, parser_for, settings)
    assert (relinked.errors, relinked.logged) == ([], 1)
    assert filed(db, "Weekend")[2] == both
    with db.sessions() as session:
        assert address_offers(session, deal.id) == []
        assert session.scalar(select(func.count()).select_from(Contact)) == 1


def test_sub_addresses_resolve_to_the_base_contact_and_never_make_a_second(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, parser_for: ParserFor,
    make_contact: Callable[..., Any],
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box)
    make_contact("Pat Prospect", email="pat@acme.example")
    dovecot.append(box.username, "INBOX", [
        build_message(from_="Pat <pat+crm@acme.example>", to=JANE, subject="From a tag"),
        build_message(from_=JANE, to="Sam <sam+deals@newco.example>", subject="To a new tag"),
        build_message(from_=JANE, to="sam@newco.example", subject="To the base"),
        build_message(from_=JANE, to="sam+other@newco.example", subject="To another tag"),
    ])  # fmt: skip
    result = run_sync(db, parser_for, settings)
    assert (result.error, result.logged, result.contacts_created) == (None, 4, 1)
    assert filed(db, "From a tag")[2] == ["pat@acme.example"]
    for subject in ("To a new tag", "To the base", "To another tag"):
        assert filed(db, subject)[2] == ["sam@newco.example"]
    with db.sessions() as session:
        assert sorted(session.scalars(select(ContactEmail.email))) == [
            "pat@acme.example",
            "sam@newco.example",
        ]


def test_people_writing_from_a_companys_domain_are_filed_on_it_and_a_domain_gained_links_its_history(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, parser_for: ParserFor,
    make_company: Callable[..., Any],
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box)
    globex = make_company("Globex", domain="globex.example")
    dovecot.append(box.username, "INBOX", [
        build_message(from_="Kim Lee <kim@eu.globex.example>", to=JANE, subject="Hello from Globex"),
        build_message(from_="lou@initech.example", to=JANE, subject="Hello from Initech"),
        build_message(from_="news@globex.example", to=JANE, subject="N", headers={"List-Id": "<n.gx>"}),
    ])  # fmt: skip
    result = run_sync(db, parser_for, settings)
    assert (result.error, result.logged, result.skipped, result.contacts_created) == (None, 1, 2, 1)
    assert filed(db, "Hello from Globex")[1:] == (globex.id, ["kim@eu.globex.example"])

    # the company gains initech.example (bought it): Lou's earlier mail is now the company's
    with transaction(db.sessions) as session:
        company = session.get(Company, globex.id)
        assert company is not None
        set_company_domains(session, company, ["globex.example", "initech.example"])
    relinked = run_relink(db, parser_for, settings)
    # (the queue also holds globex.example from when the company was made: its newsletter stays skipped)
    assert (relinked.errors, relinked.found, relinked.logged, relinked.still_skipped) == ([], 2, 1, 1)
    assert filed(db, "Hello from Initech")[1:] == (globex.id, ["lou@initech.example"])


def test_with_create_contacts_none_a_company_domain_creates_nobody(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, parser_for: ParserFor,
    make_company: Callable[..., Any],
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box, create_contacts="none")
    make_company("Globex", domain="globex.example")
    dovecot.append(box.username, "INBOX", [build_message(from_="kim@globex.example", to=JANE)])
    result = run_sync(db, parser_for, settings)
    assert (result.logged, result.skipped, result.contacts_created) == (0, 1, 0)


def test_a_delivery_failure_is_filed_on_the_contact_whose_address_failed_as_a_bounce(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, parser_for: ParserFor,
    make_contact: Callable[..., Any],
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box)
    make_contact("Pat Prospect", email="pat@acme.example")
    dovecot.append(box.username, "INBOX", [
        delivery_failure("pat+offers@acme.example"),  # a sub-address of a contact
        delivery_failure("nobody@unknown.example"),  # mail to someone who is no contact: not logged
    ])  # fmt: skip
    result = run_sync(db, parser_for, settings)
    assert (result.error, result.logged, result.skipped, result.contacts_created) == (None, 1, 1, 0)
    assert filed(db, "Undelivered Mail Returned to Sender")[2] == ["pat@acme.example"]
    with db.sessions() as session:
        bounce = session.scalar(select(Activity.bounce))
        assert bounce is True
        marked = session.execute(select(ContactEmail.email, ContactEmail.bounced_at)).all()
        assert [(e, b is not None) for e, b in marked] == [("pat@acme.example", True)]
        # never a contact for the mail system (nor for the address that failed)
        assert session.scalar(select(func.count()).select_from(Contact)) == 1

    # the unknown address becomes a contact later: its bounce is earlier mail like any other
    with transaction(db.sessions) as session:
        contact = Contact(name="Nobody", created_at=NOW)
        session.add(contact)
        session.flush()
        set_contact_emails(session, contact, ["nobody@unknown.example"])
    relinked = run_relink(db, parser_for, settings)
    assert (relinked.errors, relinked.logged) == ([], 1)
    with db.sessions() as session:
        assert (
            session.scalar(select(func.count()).select_from(Activity).where(Activity.bounce.is_(True))) == 2
        )
