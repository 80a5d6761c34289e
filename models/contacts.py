"""Contacts and companies: email normalization, lookups by address and domain, creating them one at a time
(`ensure_company_for_domain`, `add_contact_email`) or in bulk, and setting a contact's addresses or a
company's domains (an address or a domain belongs to one record only).

The bulk operations (`create_companies`, `create_contacts`, `add_company_domains`, `add_contact_emails`,
`update_contacts`) are the only code that writes these tables in bulk: the email sync (models.email_log) and
the CSV import (threadline/importer.py) both call them. They cost a fixed number of statements whatever the
number of rows, and they are safe against a concurrent writer: an address or a domain is claimed with
INSERT ... ON CONFLICT DO NOTHING in sorted order (two writers wait on each other instead of deadlocking), and
a key someone else holds already is reported as taken, with the id of the record holding it; a record made
here for keys that all turned out taken is deleted again (its twin stands).

Every operation here that gives a contact an address or a company a domain also queues a `RelinkRequest`
for it in the same transaction (`request_relink`), so the mail the sync skipped with that address or domain
is looked at again (models.history, daemon.relink) whoever made the change: the panel, the import, the sync
or the API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from models.db import chunked, dialect_insert, reserve_ids
from models.domains import check_company_domain, company_name_from_domain, normalize_domain
from models.errors import DomainError
from models.schema import Company, CompanyDomain, Contact, ContactEmail, RelinkRequest, User

_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")

_CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
_CONTACT_EMAILS: Table = ContactEmail.__table__  # type: ignore[assignment]
_COMPANIES: Table = Company.__table__  # type: ignore[assignment]
_COMPANY_DOMAINS: Table = CompanyDomain.__table__  # type: ignore[assignment]
_RELINK_REQUESTS: Table = RelinkRequest.__table__  # type: ignore[assignment]


def normalize_email(value: str) -> str | None:
    """The canonical (lowercase, trimmed) form of an address, or None if it is not one."""
    address = value.strip().strip("<>").strip().lower()
    return address if _EMAIL.match(address) else None


def base_address(address: str) -> str:
    """The address without its sub-address tag: 'pat+crm@acme.example' -> 'pat@acme.example' (RFC 5233)."""
    local, at, domain = address.rpartition("@")
    base = local.split("+", 1)[0]
    return f"{base}{at}{domain}" if at and base else address


def request_relink(
    session: Session,
    *,
    addresses: Iterable[str] = (),
    domains: Iterable[str] = (),
    now: datetime | None = None,
) -> None:
    """Queue a look at the skipped mail of these addresses and domains again (in the caller's transaction)."""
    when = now or datetime.now(UTC)
    rows = [{"address": a, "domain": None, "requested_at": when} for a in sorted(set(addresses))]
    rows += [{"address": None, "domain": d, "requested_at": when} for d in sorted(set(domains))]
    if rows:
        session.execute(_RELINK_REQUESTS.insert(), rows)


def find_contact_by_email(session: Session, email: str) -> Contact | None:
    address = normalize_email(email)
    if address is None:
        return None
    return session.scalar(select(Contact).join(ContactEmail).where(ContactEmail.email == address))


def contact_ids_by_email(session: Session, emails: Iterable[str]) -> dict[str, tuple[int, int | None]]:
    """address -> (contact id, company id) for the addresses that belong to contacts; chunked lookups, so any
    number of addresses stays under the databases' bound-variable limits."""
    found: dict[str, tuple[int, int | None]] = {}
    for chunk in chunked(sorted({e for e in emails if e})):
        rows = session.execute(
            select(ContactEmail.email, Contact.id, Contact.company_id)
            .join(Contact)
            .where(ContactEmail.email.in_(chunk))
        )
        found.update((email, (contact_id, company_id)) for email, contact_id, company_id in rows)
    return found


def company_ids_by_domain(session: Session, domains: Iterable[str]) -> dict[str, int]:
    """domain -> id of the company owning it, for the domains some company owns (chunked lookups)."""
    found: dict[str, int] = {}
    for chunk in chunked(sorted({d for d in domains if d})):
        found.update(
            (domain, company_id)
            for domain, company_id in session.execute(
                select(CompanyDomain.domain, CompanyDomain.company_id).where(CompanyDomain.domain.in_(chunk))
            )
        )
    return found


def find_company_by_domain(session: Session, domain: str) -> Company | None:
    return session.scalar(
        select(Company).join(CompanyDomain).where(CompanyDomain.domain == normalize_domain(domain))
    )


def find_company_by_name(session: Session, name: str) -> Company | None:
    return session.scalars(
        select(Company).where(func.lower(Company.name) == name.strip().lower()).order_by(Company.id)
    ).first()


def ensure_company_for_domain(
    session: Session, domain: str, *, now: datetime, owner: User | None = None, name: str | None = None
) -> Company:
    """The company owning this domain, created (named after the domain) when none does."""
    domain = normalize_domain(domain)
    company = find_company_by_domain(session, domain)
    if company is not None:
        return company
    company = Company(name=name or company_name_from_domain(domain), owner=owner, created_at=now)
    company.domains.append(CompanyDomain(domain=domain))
    session.add(company)
    session.flush()
    request_relink(session, domains=[domain], now=now)
    return company


def add_contact_email(session: Session, contact: Contact, email: str) -> bool:
    """Attach an address to a contact; False when it already belongs to someone."""
    address = normalize_email(email)
    if address is None:
        return False
    owner_id = session.scalar(select(ContactEmail.contact_id).where(ContactEmail.email == address))
    if owner_id is not None:
        return owner_id == contact.id
    contact.emails.append(ContactEmail(email=address))
    request_relink(session, addresses=[address])
    return True


def display_name_from_email(address: str) -> str:
    """'jane.doe@x.com' -> 'Jane Doe', used when an address comes without a display name."""
    local = address.split("@", 1)[0].split("+", 1)[0]
    words = [w for w in re.split(r"[._-]+", local) if w]
    return " ".join(w.capitalize() for w in words) or address


def set_contact_emails(session: Session, contact: Contact, addresses: Iterable[str]) -> None:
    """Make these the contact's addresses; one that is not an address or belongs to another contact is
    refused with a DomainError."""
    wanted: list[str] = []
    for address in addresses:
        normalized = normalize_email(address)
        if normalized is None:
            raise DomainError(f"{address!r} is not an email address")
        wanted.append(normalized)
    with session.no_autoflush:
        contact.emails[:] = [e for e in contact.emails if e.email in wanted]
        session.flush()
        for address in dict.fromkeys(wanted):
            if address not in {e.email for e in contact.emails} and not add_contact_email(
                session, contact, address
            ):
                raise DomainError(f"{address} already belongs to another contact")


def set_company_domains(session: Session, company: Company, domains: Iterable[str]) -> None:
    """Make these the company's email domains; one that is not a company domain (models.domains) or belongs to
    another company is refused with a DomainError."""
    wanted = [check_company_domain(d) for d in domains if d.strip()]
    with session.no_autoflush:
        query = select(CompanyDomain).where(CompanyDomain.domain.in_(wanted))
        if company.id is not None:
            query = query.where(CompanyDomain.company_id != company.id)
        taken = session.scalars(query).first()
        if taken is not None:
            raise DomainError(f"{taken.domain} already belongs to {taken.company.name}")
    existing = {d.domain: d for d in company.domains}
    company.domains[:] = [existing.get(d) or CompanyDomain(domain=d) for d in dict.fromkeys(wanted)]
    request_relink(session, domains=[d for d in wanted if d not in existing])


# ---- one at a time (the panel's quick add) ------------------------------------------------------------


def create_company(
    session: Session, *, name: str, now: datetime, domains: Iterable[str] = (), owner: User | None = None
) -> Company:
    """A new company with its email domains (each checked by models.domains, none taken by another)."""
    if not name.strip():
        raise DomainError("a company needs a name")
    company = Company(name=name.strip(), owner=owner, created_at=now)
    set_company_domains(session, company, domains)
    session.add(company)
    session.flush()
    return company


def company_named(session: Session, name: str, *, now: datetime, owner: User | None = None) -> Company | None:
    """The company of that name (case aside), or a new one: the contact form's inline company. None for ''."""
    if not name.strip():
        return None
    return find_company_by_name(session, name) or create_company(session, name=name, now=now, owner=owner)


def create_contact(
    session: Session,
    *,
    name: str,
    now: datetime,
    emails: Iterable[str] = (),
    phone: str = "",
    title: str = "",
    company: Company | None = None,
    owner: User | None = None,
    lead_source: str = "",
) -> Contact:
    """A new contact; an address that is not one or belongs to another contact is refused (DomainError)."""
    addresses = [e for e in emails if e.strip()]
    if not name.strip() and not addresses:
        raise DomainError("a contact needs a name or an email address")
    contact = Contact(
        name=name.strip() or display_name_from_email(addresses[0]),
        phone=phone.strip() or None,
        title=title.strip() or None,
        company=company,
        owner=owner,
        lead_source=lead_source.strip() or None,
        created_at=now,
    )
    session.add(contact)
    set_contact_emails(session, contact, addresses)
    session.flush()
    return contact


def upsert_contact(
    session: Session,
    *,
    email: str,
    now: datetime,
    name: str | None = None,
    phone: str | None = None,
    title: str | None = None,
    company: Company | None = None,
    owner: User | None = None,
    lead_source: str | None = None,
) -> tuple[Contact, bool]:
    """The contact with this address, updated with the values given (None: left as it is), or a new one;
    (contact, created). The REST API and website forms match people by email through here."""
    address = normalize_email(email)
    if address is None:
        raise DomainError(f"{email!r} is not an email address")
    contact = find_contact_by_email(session, address)
    if contact is None:
        made = create_contact(
            session, name=name or "", now=now, emails=[address], phone=phone or "", title=title or "",
            company=company, owner=owner, lead_source=lead_source or "",
        )  # fmt: skip
        return made, True
    for attribute, value in (("phone", phone), ("title", title), ("lead_source", lead_source)):
        if value is not None:
            setattr(contact, attribute, value.strip() or None)
    if name is not None and name.strip():
        contact.name = name.strip()
    if company is not None:
        contact.company = company
    if owner is not None:
        contact.owner = owner
    session.flush()
    return contact, False


# ---- bulk creation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompanyToCreate:
    name: str
    domains: tuple[str, ...] = ()  # normalized, each owned by no company yet (as far as the caller knows)
    owner_id: int | None = None


@dataclass(frozen=True)
class ContactToCreate:
    name: str
    emails: tuple[str, ...]  # normalized, each belonging to no contact yet (as far as the caller knows)
    company_id: int | None = None
    owner_id: int | None = None
    title: str | None = None
    phone: str | None = None
    lead_source: str | None = None


@dataclass(frozen=True)
class Created:
    """What a bulk creation made: one id per row in the rows' order (None for a row whose every key turned
    out to be someone else's: it was not kept), and the keys a concurrent writer held first, with the id of
    the record holding each."""

    ids: list[int | None]
    taken: dict[str, int] = field(default_factory=dict)


def create_companies(session: Session, companies: Sequence[CompanyToCreate], *, now: datetime) -> Created:
    """Insert companies with their domains: one INSERT per table for all rows."""
    ids = reserve_ids(session, _COMPANIES, len(companies))
    if not companies:
        return Created([])
    session.execute(
        _COMPANIES.insert(),
        [
            {"id": i, "name": c.name[:300], "owner_id": c.owner_id, "created_at": now}
            for c, i in zip(companies, ids, strict=True)
        ],
    )
    wanted = {d: i for c, i in zip(companies, ids, strict=True) for d in c.domains}
    taken = add_company_domains(session, wanted)
    return _drop_twins(session, _COMPANIES, [c.domains for c in companies], ids, taken)


def create_contacts(session: Session, contacts: Sequence[ContactToCreate], *, now: datetime) -> Created:
    """Insert contacts with their addresses: one INSERT per table for all rows."""
    ids = reserve_ids(session, _CONTACTS, len(contacts))
    if not contacts:
        return Created([])
    session.execute(
        _CONTACTS.insert(),
        [
            {
                "id": i,
                "name": c.name[:300],
                "company_id": c.company_id,
                "owner_id": c.owner_id,
                "title": c.title,
                "phone": c.phone,
                "lead_source": c.lead_source,
                "created_at": now,
            }
            for c, i in zip(contacts, ids, strict=True)
        ],
    )
    wanted = {e: i for c, i in zip(contacts, ids, strict=True) for e in c.emails}
    taken = add_contact_emails(session, wanted)
    return _drop_twins(session, _CONTACTS, [c.emails for c in contacts], ids, taken)


def add_company_domains(session: Session, domains: Mapping[str, int]) -> dict[str, int]:
    """Give companies these domains (domain -> company id); returns the domains another company holds."""
    taken = _claim(session, _COMPANY_DOMAINS, "domain", "company_id", domains)
    request_relink(session, domains=[d for d in domains if d not in taken])
    return taken


def add_contact_emails(session: Session, emails: Mapping[str, int]) -> dict[str, int]:
    """Give contacts these addresses (address -> contact id); returns the addresses another contact holds."""
    taken = _claim(session, _CONTACT_EMAILS, "email", "contact_id", emails)
    request_relink(session, addresses=[e for e in emails if e not in taken])
    return taken


def mark_bounced(session: Session, bounced: Mapping[str, datetime]) -> None:
    """Addresses mail to which came back undelivered (address -> when): shown on their contact."""
    when = bindparam("bounced_when", type_=_CONTACT_EMAILS.c.bounced_at.type)
    statement = (
        update(_CONTACT_EMAILS)
        .where(_CONTACT_EMAILS.c.email == bindparam("bounced_email"))
        .where((_CONTACT_EMAILS.c.bounced_at.is_(None)) | (_CONTACT_EMAILS.c.bounced_at < when))
        .values(bounced_at=when)
    )
    session.execute(statement, [{"bounced_email": a, "bounced_when": w} for a, w in sorted(bounced.items())])


def update_contacts(session: Session, changes: Mapping[int, Mapping[str, Any]]) -> None:
    """Set columns of existing contacts (contact id -> column values), one executemany per set of columns."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for contact_id, values in sorted(changes.items()):
        columns = tuple(sorted(values))
        if columns:
            by_columns.setdefault(columns, []).append({"contact_id": contact_id, **values})
    for columns, rows in by_columns.items():
        statement = (
            update(_CONTACTS)
            .where(_CONTACTS.c.id == bindparam("contact_id"))
            .values({c: bindparam(c) for c in columns})
        )
        session.execute(statement, rows)


def _claim(session: Session, table: Table, key: str, owner: str, wanted: Mapping[str, int]) -> dict[str, int]:
    """INSERT ... ON CONFLICT DO NOTHING of unique keys -> owner id; the keys someone else held first, with
    their holder's id."""
    if not wanted:
        return {}
    stmt = (
        dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(table.c[key], table.c[owner])
    )
    # ids in the caller's order (a contact's first address is its primary one), rows in key order (two
    # writers lock the same keys in the same order)
    ids = dict(zip(wanted, reserve_ids(session, table, len(wanted)), strict=True))
    rows = [{"id": ids[k], key: k, owner: v} for k, v in sorted(wanted.items())]
    claimed = {k for k, _ in session.execute(stmt, rows)}
    lost = [k for k in sorted(wanted) if k not in claimed]
    taken: dict[str, int] = {}
    for chunk in chunked(lost):
        taken.update(
            (k, int(v))
            for k, v in session.execute(select(table.c[key], table.c[owner]).where(table.c[key].in_(chunk)))
        )
    missing = [k for k in lost if k not in taken]
    if missing:
        raise RuntimeError(f"{table.name}.{key} {missing[0][:80]} is taken but not found")
    return taken


def _drop_twins(
    session: Session, table: Table, keys: Sequence[Sequence[str]], ids: list[int], taken: Mapping[str, int]
) -> Created:
    """Rows whose every key a concurrent writer claimed first are twins of theirs: delete ours."""
    kept: list[int | None] = []
    twins: list[int] = []
    for row_keys, row_id in zip(keys, ids, strict=True):
        if row_keys and all(k in taken for k in row_keys):
            twins.append(row_id)
            kept.append(None)
        else:
            kept.append(row_id)
    for chunk in chunked(twins):
        session.execute(delete(table).where(table.c.id.in_(chunk)))
    return Created(kept, dict(taken))
