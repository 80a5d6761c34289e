"""Merging contacts and companies while the sync files their mail, on PostgreSQL against a real Dovecot:
each message is filed once, on the kept record, and nothing is quarantined or lost."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.sync import SyncResult, sync_mailbox
from models.db import transaction
from models.merge import MergeKind, merge_records
from models.schema import Activity, ActivityKind, Company, Contact, ContactEmail, activity_contacts
from settings import MailboxSettings, Settings
from tests.daemon.conftest import MakeMailbox, ParserFor, build_message, make_settings, team_of
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW

PAIRS = 12
MESSAGES_PER_ADDRESS = 15


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_merging_while_the_sync_runs_loses_and_doubles_nothing(
    db: TestDatabase,
    dovecot: DovecotServer,
    make_mailbox: MakeMailbox,
    parser_for: ParserFor,
    session: Session,
    make_contact: Callable[..., Contact],
    make_company: Callable[..., Company],
) -> None:
    # twelve people known twice (a work and a personal address), half of them at a company known twice too
    pairs: list[tuple[int, int]] = []
    companies: list[tuple[int, int]] = []
    for n in range(PAIRS):
        company = other_company = None
        if n % 2 == 0:
            company = make_company(f"Client {n}", domain=f"client{n}.example")
            other_company = make_company(f"Client {n} Ltd", domain=f"client{n}.co.uk")
            companies.append((company.id, other_company.id))
        keep = make_contact(f"Person {n}", email=f"p{n}@client{n}.example", company=company)
        other = make_contact(f"Person {n} (home)", email=f"p{n}.home@gmail.com", company=other_company)
        pairs.append((keep.id, other.id))
    box = make_mailbox("sales", owner="jane@team.example")
    settings = make_settings(box, batch_size=15, db_url=db.url)
    messages = [
        build_message(from_=f"p{n}{home}@{domain}", to="jane@team.example", subject=f"{n}{home} #{i}")
        for i in range(MESSAGES_PER_ADDRESS)
        for n in range(PAIRS)
        for home, domain in (("", f"client{n}.example"), (".home", "gmail.com"))
    ]
    dovecot.append(box.username, "INBOX", messages)

    results: list[SyncResult] = []

    def run_sync() -> None:
        results.append(sync(box, db, settings, parser_for))

    syncing = threading.Thread(target=run_sync)
    syncing.start()
    merged_while_syncing = 0
    try:
        _wait_for_first_batch(db, syncing)
        for (keep_id, other_id), company_pair in zip(pairs, [*companies, *[None] * PAIRS], strict=False):
            with transaction(db.sessions) as tx:
                merge_records(tx, MergeKind.CONTACT, keep_id, other_id, now=NOW)
                if company_pair is not None:
                    merge_records(tx, MergeKind.COMPANY, *company_pair, now=NOW)
            merged_while_syncing += syncing.is_alive()
    finally:
        syncing.join(timeout=300)
    assert not syncing.is_alive()
    assert merged_while_syncing >= 3, "the sync finished before the merges: nothing was tested"

    [result] = results
    total = len(messages)
    assert result.error is None
    assert (result.new, result.logged, result.quarantined) == (total, total, 0)
    session.rollback()
    emails = session.scalars(select(Activity).where(Activity.kind == ActivityKind.EMAIL)).all()
    assert len(emails) == total and len({a.content_key for a in emails}) == total
    kept_contacts = {keep for keep, _ in pairs}
    assert set(session.scalars(select(Contact.id))) == kept_contacts
    assert set(session.scalars(select(Company.id))) == {keep for keep, _ in companies}
    links = session.execute(
        select(activity_contacts.c.activity_id, activity_contacts.c.contact_id).where(
            activity_contacts.c.activity_id.in_([a.id for a in emails])
        )
    ).all()
    assert len(links) == total  # every email on exactly one contact: the kept one
    by_contact: dict[int, int] = {}
    for _, contact_id in links:
        by_contact[contact_id] = by_contact.get(contact_id, 0) + 1
    assert by_contact == dict.fromkeys(kept_contacts, 2 * MESSAGES_PER_ADDRESS)
    for keep_id, _ in pairs:
        addresses = session.scalars(
            select(ContactEmail.email).where(ContactEmail.contact_id == keep_id)
        ).all()
        assert len(addresses) == 2
    company_of = {c: co for c, co in session.execute(select(Contact.id, Contact.company_id))}
    for activity in emails:
        contact_id = next(c for a, c in links if a == activity.id)
        assert activity.company_id == company_of[contact_id]  # the kept company, never a removed one

    # a second pass finds nothing new and files nothing twice
    again = sync(box, db, settings, parser_for)
    assert (again.error, again.new, again.logged) == (None, 0, 0)
    assert (
        session.scalar(select(func.count()).select_from(Activity).where(Activity.kind == ActivityKind.EMAIL))
        == total
    )


def sync(box: MailboxSettings, db: TestDatabase, settings: Settings, parser_for: ParserFor) -> SyncResult:
    return sync_mailbox(
        box, db.sessions, matching=settings.matching, team=team_of(settings), now_fn=lambda: NOW,
        parser=parser_for(settings.matching),
    )  # fmt: skip


def _wait_for_first_batch(db: TestDatabase, syncing: threading.Thread) -> None:
    """Until the sync committed its first batch (polled on the database, which is where it shows)."""
    done = threading.Event()
    while syncing.is_alive() and not done.wait(0.02):
        with db.sessions() as s:
            if s.scalar(select(func.count()).select_from(Activity)):
                return
