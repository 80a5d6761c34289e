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

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, cast, func, literal, literal_column, select
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


class Rule(enum.StrEnum):
    """One way two records look like duplicates; the panel shows one rule at a time (one query a page)."""

    CONTACT_NAME = "contact-name"
    CONTACT_PHONE = "contact-phone"
    CONTACT_ADDRESS = "contact-address"
    COMPANY_NAME = "company-name"
    COMPANY_DOMAIN = "company-domain"

    @property
    def kind(self) -> MergeKind:
        return MergeKind.CONTACT if self.value.startswith("contact") else MergeKind.COMPANY

    @property
    def reason(self) -> str:
        return _TITLES[self]


_TITLES = {
    Rule.CONTACT_NAME: "Same name at the same company",
    Rule.CONTACT_PHONE: "Same phone",
    Rule.CONTACT_ADDRESS: "Same address but for dots or +tag",
    Rule.COMPANY_NAME: "Same name",
    Rule.COMPANY_DOMAIN: "Same registrable domain",
}


def find_duplicates(
    session: Session, rules: Iterable[Rule] = tuple(Rule), *, limit: int = GROUPS_PER_RULE
) -> Duplicates:
    """Groups of likely duplicates by these rules: at most `limit` groups per rule, largest first."""
    finders = {
        Rule.CONTACT_NAME: _same_name_at_company,
        Rule.CONTACT_PHONE: _same_phone,
        Rule.CONTACT_ADDRESS: _same_mailbox,
        Rule.COMPANY_NAME: _same_company_name,
        Rule.COMPANY_DOMAIN: _same_registrable_domain,
    }
    found: dict[MergeKind, list[tuple[str, str, list[int]]]] = {MergeKind.CONTACT: [], MergeKind.COMPANY: []}
    for rule in rules:
        found[rule.kind] += [(rule.reason, k, ids) for k, ids in finders[rule](session, limit)]
    contacts = _contact_members(session, {i for _, _, ids in found[MergeKind.CONTACT] for i in ids})
    companies = _company_members(session, {i for _, _, ids in found[MergeKind.COMPANY] for i in ids})
    return Duplicates(
        contacts=_groups(MergeKind.CONTACT, found[MergeKind.CONTACT], contacts),
        companies=_groups(MergeKind.COMPANY, found[MergeKind.COMPANY], companies),
    )


# ---- the keys, one grouping query each ------------------------------------------------------------------


def _grouped(
    session: Session, keys: Sequence[Any], owner: Any, where: Any, limit: int
) -> list[tuple[str, list[int]]]:
    """Keys shared by two records or more (largest groups first), with the records' ids in id order; the
    last key column is the one shown. One GROUP BY that also collects each group's ids."""
    # count(*), not count(DISTINCT ...): SQLite builds a temporary index per group for DISTINCT (5x the time);
    # a group whose rows all belong to one record (two addresses of one contact) is dropped below
    count = func.count()
    if _pg(session):
        ids: Any = func.string_agg(cast(owner, String), literal_column("','"))
    else:
        ids = func.group_concat(owner, ",")
    rows = session.execute(
        select(keys[-1], ids)
        .where(where)
        .group_by(*keys)
        .having(count > 1)
        .order_by(count.desc(), *keys)
        .limit(limit)
    )
    found = [(str(key), sorted({int(i) for i in str(joined).split(",")})) for key, joined in rows]
    return sorted((g for g in found if len(g[1]) > 1), key=lambda g: (-len(g[1]), g[0]))


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
    # a registrable domain ends with the domain's last two labels: only domains whose last two labels are
    # shared by two companies can share one, and only those are looked up in the list
    by_tail: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for domain, company_id in session.execute(select(CompanyDomain.domain, CompanyDomain.company_id)):
        by_tail[".".join(domain.rsplit(".", 2)[-2:])].append((domain, int(company_id)))
    found: dict[str, set[int]] = defaultdict(set)
    for rows in by_tail.values():
        if len({company_id for _, company_id in rows}) < 2:
            continue
        for domain, company_id in rows:
            registrable = company_domain_of(domain)
            if registrable is not None:
                found[registrable].add(company_id)
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
