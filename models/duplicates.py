"""Likely duplicates among contacts and companies: the suggestions the panel offers to merge (models.merge).

A group is records that share one of these keys:
- contacts with the same name (ignoring case and outer spaces) at the same company;
- contacts with the same phone number: its digits only, without leading zeros ("+1 (555) 010-0199" and
  "001 555 010 0199" are one number; a national form such as "020 ..." against "+44 20 ..." is not matched);
- contacts with addresses that differ only by a "+tag" (any domain) or, at gmail.com and googlemail.com, by
  dots in the local part ("jane.doe+crm@gmail.com" and "janedoe@googlemail.com");
- companies with the same name (ignoring case and outer spaces);
- companies with domains under the same registrable domain (eu.acme.co.uk and acme.co.uk), per the Public
  Suffix List (models.domains).

Each kind is one grouping query in the database (GROUP BY ... HAVING count > 1), so the cost grows with the
number of rows, never with its square. Only the registrable-domain rule needs the Public Suffix List, which
the database does not have: the domains (one per company, typically) are read once and grouped in a dict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select
from sqlalchemy.orm import Session, joinedload, selectinload

from models.db import chunked
from models.domains import company_domain_of
from models.merge import MergeKind
from models.schema import Company, CompanyDomain, Contact, ContactEmail

GROUPS_PER_RULE = 100  # the panel shows this many groups per rule, the largest first
MEMBERS_PER_GROUP = 20
MIN_PHONE_DIGITS = 7
GMAIL_DOMAINS = ("gmail.com", "googlemail.com")


@dataclass(frozen=True)
class Member:
    record_id: int
    label: str
    detail: str


@dataclass(frozen=True)
class DuplicateGroup:
    kind: MergeKind
    reason: str
    key: str
    members: tuple[Member, ...]


@dataclass
class Duplicates:
    contacts: list[DuplicateGroup] = field(default_factory=list)
    companies: list[DuplicateGroup] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.contacts or self.companies)


def find_duplicates(session: Session, *, limit: int = GROUPS_PER_RULE) -> Duplicates:
    """Groups of likely duplicates, by rule: at most `limit` groups per rule, largest first."""
    contact_groups: list[tuple[str, str, list[int]]] = []
    contact_groups += [
        ("Same name at the same company", k, ids) for k, ids in _same_name_at_company(session, limit)
    ]
    contact_groups += [("Same phone", k, ids) for k, ids in _same_phone(session, limit)]
    contact_groups += [
        ("Same address but for dots or +tag", k, ids) for k, ids in _same_mailbox(session, limit)
    ]
    company_groups: list[tuple[str, str, list[int]]] = []
    company_groups += [("Same name", k, ids) for k, ids in _same_company_name(session, limit)]
    company_groups += [
        ("Same registrable domain", k, ids) for k, ids in _same_registrable_domain(session, limit)
    ]
    contacts = _contact_members(session, {i for _, _, ids in contact_groups for i in ids})
    companies = _company_members(session, {i for _, _, ids in company_groups for i in ids})
    return Duplicates(
        contacts=_groups(MergeKind.CONTACT, contact_groups, contacts),
        companies=_groups(MergeKind.COMPANY, company_groups, companies),
    )


# ---- the keys, one grouping query each ------------------------------------------------------------------


def _grouped(
    session: Session, keys: Sequence[Any], owner: Any, where: Any, limit: int
) -> list[tuple[str, list[int]]]:
    """Keys shared by two records or more (largest groups first), with the records' ids in id order; the
    last key column is the one shown."""
    count = func.count(func.distinct(owner))
    shared = (
        select(*(k.label(f"k{i}") for i, k in enumerate(keys)))
        .where(where)
        .group_by(*keys)
        .having(count > 1)
        .order_by(count.desc(), *keys)
        .limit(limit)
    ).subquery()
    columns = [shared.c[f"k{i}"] for i in range(len(keys))]
    rows = session.execute(
        select(columns[-1], owner)
        .distinct()
        .join_from(owner.table, shared, and_(*(k == c for k, c in zip(keys, columns, strict=True))))
        .where(where)
    )
    found: dict[str, set[int]] = defaultdict(set)
    for key, record_id in rows:
        found[str(key)].add(int(record_id))
    return sorted(((k, sorted(ids)) for k, ids in found.items()), key=lambda g: (-len(g[1]), g[0]))


def _same_name_at_company(session: Session, limit: int) -> list[tuple[str, list[int]]]:
    name = func.lower(func.trim(Contact.name))
    return _grouped(
        session,
        [Contact.company_id, name],
        Contact.id,
        and_(Contact.company_id.is_not(None), name != ""),
        limit,
    )


def _same_phone(session: Session, limit: int) -> list[tuple[str, list[int]]]:
    digits: Any = Contact.phone
    for ch in (" ", "-", "(", ")", ".", "/", "+", "\t"):
        digits = func.replace(digits, ch, "")
    key = func.ltrim(digits, "0")
    return _grouped(
        session,
        [key],
        Contact.id,
        and_(Contact.phone.is_not(None), func.length(key) >= MIN_PHONE_DIGITS),
        limit,
    )


def _same_mailbox(session: Session, limit: int) -> list[tuple[str, list[int]]]:
    email = ContactEmail.email
    at = _position(session, email, "@")
    local = func.substr(email, 1, at - 1)
    domain = func.substr(email, at + 1)
    plus = _position(session, local, "+")
    base = case((plus > 1, func.substr(local, 1, plus - 1)), else_=local)
    gmail = domain.in_(GMAIL_DOMAINS)
    key = _concat(
        case((gmail, func.replace(base, ".", "")), else_=base),
        literal("@"),
        case((gmail, literal("gmail.com")), else_=domain),
    )
    return _grouped(session, [key], ContactEmail.contact_id, at > 1, limit)


def _same_company_name(session: Session, limit: int) -> list[tuple[str, list[int]]]:
    name = func.lower(func.trim(Company.name))
    return _grouped(session, [name], Company.id, name != "", limit)


def _same_registrable_domain(session: Session, limit: int) -> list[tuple[str, list[int]]]:
    """Grouped in a dict: the Public Suffix List lives in Python (one pass over the company domains)."""
    found: dict[str, set[int]] = defaultdict(set)
    for domain, company_id in session.execute(select(CompanyDomain.domain, CompanyDomain.company_id)):
        registrable = company_domain_of(domain)
        if registrable is not None:
            found[registrable].add(int(company_id))
    groups = [(k, sorted(ids)) for k, ids in found.items() if len(ids) > 1]
    groups.sort(key=lambda g: (-len(g[1]), g[0]))
    return groups[:limit]


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _position(session: Session, value: Any, needle: str) -> ColumnElement[int]:
    return func.strpos(value, needle) if _pg(session) else func.instr(value, needle)


def _concat(*parts: Any) -> ColumnElement[str]:
    result = parts[0]
    for part in parts[1:]:
        result = result.concat(part)
    return result  # type: ignore[no-any-return]


# ---- what the panel shows of each member ---------------------------------------------------------------


def _contact_members(session: Session, ids: Iterable[int]) -> dict[int, Member]:
    members: dict[int, Member] = {}
    for chunk in chunked(sorted(ids)):
        for contact in session.scalars(
            select(Contact)
            .where(Contact.id.in_(chunk))
            .options(selectinload(Contact.emails), joinedload(Contact.company))
        ):
            details = [", ".join(e.email for e in contact.emails[:3])]
            if contact.company is not None:
                details.append(contact.company.name)
            if contact.phone:
                details.append(contact.phone)
            members[contact.id] = Member(contact.id, str(contact), " · ".join(d for d in details if d))
    return members


def _company_members(session: Session, ids: Iterable[int]) -> dict[int, Member]:
    members: dict[int, Member] = {}
    for chunk in chunked(sorted(ids)):
        for company in session.scalars(
            select(Company).where(Company.id.in_(chunk)).options(selectinload(Company.domains))
        ):
            detail = ", ".join(d.domain for d in company.domains[:5])
            members[company.id] = Member(company.id, str(company), detail)
    return members


def _groups(
    kind: MergeKind, found: Sequence[tuple[str, str, list[int]]], members: dict[int, Member]
) -> list[DuplicateGroup]:
    groups: list[DuplicateGroup] = []
    for reason, key, ids in found:
        shown = tuple(members[i] for i in ids[:MEMBERS_PER_GROUP] if i in members)
        if len(shown) > 1:
            groups.append(DuplicateGroup(kind, reason, key, shown))
    return groups
