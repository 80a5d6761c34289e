"""Contacts and companies: email normalization, lookups by address and domain, creating them on demand, and
setting a contact's addresses or a company's domains (an address or a domain belongs to one record only)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import DomainError
from models.schema import Company, CompanyDomain, Contact, ContactEmail, User

_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")


def normalize_email(value: str) -> str | None:
    """The canonical (lowercase, trimmed) form of an address, or None if it is not one."""
    address = value.strip().strip("<>").strip().lower()
    return address if _EMAIL.match(address) else None


def normalize_domain(value: str) -> str:
    return value.strip().lower().lstrip("@").rstrip(".")


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1]


def find_contact_by_email(session: Session, email: str) -> Contact | None:
    address = normalize_email(email)
    if address is None:
        return None
    return session.scalar(select(Contact).join(ContactEmail).where(ContactEmail.email == address))


def contacts_by_email(session: Session, emails: Iterable[str]) -> dict[str, Contact]:
    """Map each known address to its contact in one query."""
    wanted = sorted({e for e in emails if e})
    if not wanted:
        return {}
    rows = session.execute(
        select(ContactEmail.email, Contact).join(Contact).where(ContactEmail.email.in_(wanted))
    ).all()
    return {email: contact for email, contact in rows}


def find_company_by_domain(session: Session, domain: str) -> Company | None:
    return session.scalar(
        select(Company).join(CompanyDomain).where(CompanyDomain.domain == normalize_domain(domain))
    )


def find_company_by_name(session: Session, name: str) -> Company | None:
    return session.scalars(
        select(Company).where(func.lower(Company.name) == name.strip().lower()).order_by(Company.id)
    ).first()


def company_name_from_domain(domain: str) -> str:
    """'acme-corp.co.uk' -> 'Acme Corp': a readable default staff can rename."""
    labels = normalize_domain(domain).split(".")
    second_level = {"co", "com", "org", "net", "ac", "gov", "edu"}
    while len(labels) > 2 and labels[-2] in second_level:
        labels = labels[:-1]
    base = labels[-2] if len(labels) >= 2 else labels[0]
    return " ".join(part.capitalize() for part in re.split(r"[-_]", base) if part) or domain


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
    """Make these the company's email domains; one that is not a domain name or belongs to another company is
    refused with a DomainError."""
    wanted = [d for d in (normalize_domain(d) for d in domains) if d]
    for domain in wanted:
        if "." not in domain or " " in domain:
            raise DomainError(f"{domain!r} is not a domain name")
    with session.no_autoflush:
        query = select(CompanyDomain).where(CompanyDomain.domain.in_(wanted))
        if company.id is not None:
            query = query.where(CompanyDomain.company_id != company.id)
        taken = session.scalars(query).first()
        if taken is not None:
            raise DomainError(f"{taken.domain} already belongs to {taken.company.name}")
    existing = {d.domain: d for d in company.domains}
    company.domains[:] = [existing.get(d) or CompanyDomain(domain=d) for d in dict.fromkeys(wanted)]
