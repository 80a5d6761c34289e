"""`threadline export`: every contact, company, deal, activity or quarantined message as JSON lines or CSV.

Owns the export formats (the field lists below are the contract scripts rely on) and streaming them: rows are
read in batches of BATCH (yield_per, a server-side cursor on PostgreSQL) and each batch's lists (emails,
domains, contacts, mailboxes) come from one extra query per batch, so memory stays flat however many rows
there are. Values: times are ISO 8601 UTC ending in 'Z', dates YYYY-MM-DD, money a string with two decimals
("1234.50", exact), people by email, companies and deals by name; in CSV a list is joined with ';'.

CSV is for spreadsheets, and its text comes from mail and from people: every cell goes through
models.spreadsheet, so a subject such as `=HYPERLINK(...)` is shown as text, never run. JSON lines are for
programs and carry every value exactly as stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TextIO

from sqlalchemy import Executable, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from models.schema import (
    Activity,
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    EmailSighting,
    Pipeline,
    QuarantinedMessage,
    Stage,
    User,
    activity_contacts,
    deal_contacts,
)
from models.spreadsheet import SafeCsvWriter

BATCH = 1000
# bound parameters per IN list, well under SQLite's and PostgreSQL's limits
_IN_CHUNK = 900

FIELDS: dict[str, tuple[str, ...]] = {
    "contacts": (
        "id", "name", "emails", "company", "owner", "title", "phone", "lead_source", "created_at",
        "last_activity_at",
    ),
    "companies": ("id", "name", "domains", "owner", "created_at", "last_activity_at"),
    "deals": (
        "id", "title", "value", "currency", "pipeline", "stage", "status", "owner", "company", "contacts",
        "expected_close", "created_at", "closed_at", "lost_reason", "last_activity_at",
    ),
    "activities": (
        "id", "kind", "occurred_at", "subject", "direction", "message_id", "contacts", "company", "deal",
        "deal_id", "mailboxes", "author",
    ),
    "quarantine": (
        "id", "mailbox", "folder", "uidvalidity", "uid", "message_id", "reason", "created_at", "attempts",
        "last_attempt_at", "resolved_at",
    ),
}  # fmt: skip

Record = dict[str, Any]


def export(sessions: sessionmaker[Session], what: str, fmt: str, stream: TextIO) -> int:
    """Write every record of one kind to the stream; returns how many were written."""
    fields = FIELDS[what]
    write = _jsonl_writer(stream) if fmt == "jsonl" else _csv_writer(stream, fields)
    count = 0
    with sessions() as session:
        for record in _RECORDS[what](session):
            write(record)
            count += 1
    stream.flush()
    return count


# ---- formats ----------------------------------------------------------------------------------------------


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, Enum):
        return value.value
    return value


def _jsonl_writer(stream: TextIO) -> Callable[[Record], None]:
    def write(record: Record) -> None:
        stream.write(json.dumps({k: _value(v) for k, v in record.items()}, ensure_ascii=False) + "\n")

    return write


def _csv_writer(stream: TextIO, fields: Sequence[str]) -> Callable[[Record], None]:
    writer = SafeCsvWriter(stream)
    writer.writerow(fields)

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return ";".join(str(v) for v in value)
        return str(_value(value))

    def write(record: Record) -> None:
        writer.writerow([cell(record[name]) for name in fields])

    return write


# ---- reading in batches -----------------------------------------------------------------------------------


def _batches(session: Session, statement: Executable) -> Iterator[Sequence[Any]]:
    result = session.execute(statement.execution_options(yield_per=BATCH))
    yield from result.partitions()


def _in_chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IN_CHUNK):
        yield unique[start : start + _IN_CHUNK]


def _grouped(
    session: Session, statement: Callable[[list[int]], Executable], ids: Iterable[int]
) -> dict[int, list[Any]]:
    """key -> [values] from a (key, value) query run on the ids chunk by chunk, in the query's order."""
    grouped: dict[int, list[Any]] = {}
    for chunk in _in_chunks(ids):
        for key, value in session.execute(statement(chunk)):
            grouped.setdefault(key, []).append(value)
    return grouped


def _contact_addresses(session: Session, contact_ids: Iterable[int]) -> dict[int, list[str]]:
    return _grouped(
        session,
        lambda chunk: (
            select(ContactEmail.contact_id, ContactEmail.email)
            .where(ContactEmail.contact_id.in_(chunk))
            .order_by(ContactEmail.contact_id, ContactEmail.id)
        ),
        contact_ids,
    )


def _contact_labels(session: Session, links: dict[int, list[int]]) -> dict[int, list[str]]:
    """Each linked contact (id -> contact ids) as its first email, or its name when it has no email."""
    contact_ids = {c for ids in links.values() for c in ids}
    addresses = _contact_addresses(session, contact_ids)
    missing = [c for c in contact_ids if c not in addresses]
    names: dict[int, str] = {}
    for chunk in _in_chunks(missing):
        rows = session.execute(select(Contact.id, Contact.name).where(Contact.id.in_(chunk)))
        names.update({contact_id: name for contact_id, name in rows})
    return {
        key: [addresses[c][0] if c in addresses else names.get(c, f"contact {c}") for c in ids]
        for key, ids in links.items()
    }


# ---- record kinds -----------------------------------------------------------------------------------------


def _contacts(session: Session) -> Iterator[Record]:
    statement = (
        select(Contact, Company.name, User.email)
        .outerjoin(Company, Contact.company_id == Company.id)
        .outerjoin(User, Contact.owner_id == User.id)
        .order_by(Contact.id)
    )
    for batch in _batches(session, statement):
        emails = _contact_addresses(session, [contact.id for contact, _, _ in batch])
        for contact, company, owner in batch:
            yield {
                "id": contact.id, "name": contact.name, "emails": emails.get(contact.id, []),
                "company": company, "owner": owner, "title": contact.title, "phone": contact.phone,
                "lead_source": contact.lead_source, "created_at": contact.created_at,
                "last_activity_at": contact.last_activity_at,
            }  # fmt: skip


def _companies(session: Session) -> Iterator[Record]:
    statement = select(Company, User.email).outerjoin(User, Company.owner_id == User.id).order_by(Company.id)
    for batch in _batches(session, statement):
        domains = _grouped(
            session,
            lambda chunk: (
                select(CompanyDomain.company_id, CompanyDomain.domain)
                .where(CompanyDomain.company_id.in_(chunk))
                .order_by(CompanyDomain.company_id, CompanyDomain.id)
            ),
            [company.id for company, _ in batch],
        )
        for company, owner in batch:
            yield {
                "id": company.id, "name": company.name, "domains": domains.get(company.id, []),
                "owner": owner, "created_at": company.created_at,
                "last_activity_at": company.last_activity_at,
            }  # fmt: skip


def _deals(session: Session) -> Iterator[Record]:
    statement = (
        select(Deal, Pipeline.name, Stage.name, Company.name, User.email)
        .join(Pipeline, Deal.pipeline_id == Pipeline.id)
        .join(Stage, Deal.stage_id == Stage.id)
        .outerjoin(Company, Deal.company_id == Company.id)
        .outerjoin(User, Deal.owner_id == User.id)
        .order_by(Deal.id)
    )
    for batch in _batches(session, statement):
        links = _grouped(
            session,
            lambda chunk: (
                select(deal_contacts.c.deal_id, deal_contacts.c.contact_id)
                .where(deal_contacts.c.deal_id.in_(chunk))
                .order_by(deal_contacts.c.deal_id, deal_contacts.c.contact_id)
            ),
            [row[0].id for row in batch],
        )
        contacts = _contact_labels(session, links)
        for deal, pipeline, stage, company, owner in batch:
            yield {
                "id": deal.id, "title": deal.title, "value": deal.value, "currency": deal.currency,
                "pipeline": pipeline, "stage": stage, "status": deal.status, "owner": owner,
                "company": company,
                "contacts": contacts.get(deal.id, []), "expected_close": deal.expected_close_on,
                "created_at": deal.created_at, "closed_at": deal.closed_at, "lost_reason": deal.lost_reason,
                "last_activity_at": deal.last_activity_at,
            }  # fmt: skip


def _activities(session: Session) -> Iterator[Record]:
    author = aliased(User)
    statement = (
        select(
            Activity.id,
            Activity.kind,
            Activity.occurred_at,
            Activity.subject,
            Activity.direction,
            Activity.message_id,
            Company.name,
            Deal.title,
            Activity.deal_id,
            author.email,
        )
        .outerjoin(Company, Activity.company_id == Company.id)
        .outerjoin(Deal, Activity.deal_id == Deal.id)
        .outerjoin(author, Activity.author_id == author.id)
        .order_by(Activity.occurred_at, Activity.id)
    )
    for batch in _batches(session, statement):
        ids = [row[0] for row in batch]
        links = _grouped(
            session,
            lambda chunk: (
                select(activity_contacts.c.activity_id, activity_contacts.c.contact_id)
                .where(activity_contacts.c.activity_id.in_(chunk))
                .order_by(activity_contacts.c.activity_id, activity_contacts.c.contact_id)
            ),
            ids,
        )
        contacts = _contact_labels(session, links)
        mailboxes = _grouped(
            session,
            lambda chunk: (
                select(EmailSighting.activity_id, EmailSighting.mailbox)
                .where(EmailSighting.activity_id.in_(chunk))
                .distinct()
                .order_by(EmailSighting.activity_id, EmailSighting.mailbox)
            ),
            ids,
        )
        for (
            activity_id,
            kind,
            occurred_at,
            subject,
            direction,
            message_id,
            company,
            deal,
            deal_id,
            by,
        ) in batch:
            yield {
                "id": activity_id, "kind": kind, "occurred_at": occurred_at, "subject": subject,
                "direction": direction, "message_id": message_id, "contacts": contacts.get(activity_id, []),
                "company": company, "deal": deal, "deal_id": deal_id,
                "mailboxes": mailboxes.get(activity_id, []), "author": by,
            }  # fmt: skip


def _quarantine(session: Session) -> Iterator[Record]:
    q = QuarantinedMessage
    # the raw bytes stay in the database: they are for retrying, and can be megabytes each
    statement = select(
        q.id, q.mailbox, q.folder, q.uidvalidity, q.uid, q.message_id, q.reason, q.created_at, q.attempts,
        q.last_attempt_at, q.resolved_at,
    ).order_by(q.id)  # fmt: skip
    for batch in _batches(session, statement):
        for row in batch:
            yield dict(zip(FIELDS["quarantine"], row, strict=True))


_RECORDS: dict[str, Callable[[Session], Iterator[Record]]] = {
    "contacts": _contacts,
    "companies": _companies,
    "deals": _deals,
    "activities": _activities,
    "quarantine": _quarantine,
}
