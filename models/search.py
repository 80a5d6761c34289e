"""Search everywhere: contacts (name, any address, phone), companies (name, domain) and deals (title).

The one owner of the panel's search. A query matches anywhere in those fields, ignoring case; hits come back
grouped by kind, the best first (the name starts with the query, then a word of it does, then the rest, each
alphabetically), at most `limit` per kind.

Speed comes from indexes that see every write, whoever makes it (the panel, the sync, an import), created by
migration 0003:
- SQLite: one FTS5 table per kind with the trigram tokenizer, kept by triggers (rowid: the source row's id
  times two, plus one for an address or a domain; `record_id` the contact, company or deal).
- PostgreSQL: pg_trgm GIN indexes on each searched column, used by ILIKE '%...%'.
A trigram index needs at least three characters: a shorter query matches the start of names and titles only.
Without those indexes (an SQLite without FTS5, a PostgreSQL without pg_trgm) the same results come from
a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, inspect, or_, select, text, union
from sqlalchemy.orm import Session

from models.schema import Company, CompanyDomain, Contact, ContactEmail, Deal, DealStatus

MIN_SUBSTRING = 3
"""Shorter queries match the start of a name or title only (a trigram index cannot serve them)."""
CANDIDATES = 60
"""Matches read per kind before ranking (a common query matches thousands; the best few are shown)."""
MAX_QUERY = 100

SQLITE_TABLES = ("contact_search", "company_search", "deal_search")
PG_INDEXES = (
    "ix_contacts_name_trgm",
    "ix_contacts_phone_trgm",
    "ix_contact_emails_email_trgm",
    "ix_companies_name_trgm",
    "ix_company_domains_domain_trgm",
    "ix_deals_title_trgm",
)
SEARCH_OBJECTS = frozenset(SQLITE_TABLES + PG_INDEXES)
"""Database objects the search owns outside the ORM metadata (the schema comparison leaves them out)."""


def is_search_object(name: str | None) -> bool:
    """A search table, one of its FTS5 shadow tables (`contact_search_data`...) or a trigram index."""
    if not name:
        return False
    return name in SEARCH_OBJECTS or any(name.startswith(f"{t}_") for t in SQLITE_TABLES)


@dataclass(frozen=True)
class Hit:
    kind: str
    """contact, company or deal."""
    record_id: int
    label: str
    detail: str
    """What else identifies it: the address and company of a contact, a company's domain, a deal's company
    and status."""


@dataclass(frozen=True)
class Results:
    query: str
    contacts: list[Hit] = field(default_factory=list)
    companies: list[Hit] = field(default_factory=list)
    deals: list[Hit] = field(default_factory=list)

    @property
    def groups(self) -> list[tuple[str, list[Hit]]]:
        return [("Contacts", self.contacts), ("Companies", self.companies), ("Deals", self.deals)]

    @property
    def empty(self) -> bool:
        return not (self.contacts or self.companies or self.deals)


def clean_query(query: str) -> str:
    """The query as searched: trimmed, inner spaces collapsed, LIKE wildcards and quotes dropped."""
    kept = "".join(" " if ch in "%_\\\"'" else ch for ch in query[:MAX_QUERY])
    return " ".join(kept.split())


def search(session: Session, query: str, *, limit: int = 8) -> Results:
    """Contacts, companies and deals matching `query`, grouped, at most `limit` of each."""
    wanted = clean_query(query)
    if not wanted:
        return Results(query=wanted)
    indexed = _indexes(session)
    return Results(
        query=wanted,
        contacts=_contacts(session, _CONTACTS.ids(session, wanted, indexed), wanted, limit),
        companies=_companies(session, _COMPANIES.ids(session, wanted, indexed), wanted, limit),
        deals=_deals(session, _DEALS.ids(session, wanted, indexed), wanted, limit),
    )


# ---- which index serves this database ---------------------------------------------------------------------

_INDEX_CACHE: dict[Any, bool] = {}


def _indexes(session: Session) -> bool:
    """Does this database have the search indexes of migration 0003? (asked once per engine)"""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    if engine not in _INDEX_CACHE:
        names: set[str]
        if bind.dialect.name == "sqlite":
            names = set(inspect(bind).get_table_names())
            _INDEX_CACHE[engine] = all(t in names for t in SQLITE_TABLES)
        else:
            names = {ix["name"] or "" for ix in inspect(bind).get_indexes("contacts")}
            _INDEX_CACHE[engine] = "ix_contacts_name_trgm" in names
    return _INDEX_CACHE[engine]


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _fts_ids(session: Session, table: str, pattern: str) -> list[int]:
    rows = session.execute(
        text(f"SELECT DISTINCT record_id FROM {table} WHERE body LIKE :pattern LIMIT :n"),
        {"pattern": pattern, "n": CANDIDATES},
    )
    return [int(r[0]) for r in rows]


def _first_ids(session: Session, query: Select[Any]) -> list[int]:
    return list(session.scalars(query.limit(CANDIDATES)))


# ---- matching ids per kind --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """Where one kind of record is searched: its name column, its other columns, its child table's column
    (addresses, domains) and the FTS5 table that indexes them all on SQLite."""

    key: Any
    name: Any
    columns: tuple[Any, ...]
    child: Any | None
    child_parent: Any | None
    fts: str

    def ids(self, session: Session, q: str, indexed: bool) -> list[int]:
        if len(q) < MIN_SUBSTRING:
            return _first_ids(session, select(self.key).where(self._starts_with(session, q)))
        if indexed and _is_sqlite(session):
            return _fts_ids(session, self.fts, f"%{q}%")
        # one SELECT per column, each served by its own trigram index (an OR of them is a sequential scan)
        pattern = f"%{q}%"
        parts = [
            select(self.key.label("id")).where(column.ilike(pattern)).limit(CANDIDATES)
            for column in (self.name, *self.columns)
        ]
        if self.child is not None and self.child_parent is not None:
            parts.append(
                select(self.child_parent.label("id")).where(self.child.ilike(pattern)).limit(CANDIDATES)
            )
        found = union(*(part.subquery().select() for part in parts)).subquery()
        return _first_ids(session, select(found.c.id))

    def _starts_with(self, session: Session, q: str) -> ColumnElement[bool]:
        """Names starting with `q`, through an index: on PostgreSQL the trigram index serves ILIKE 'q%'; on
        SQLite the name's own index, one range per usual capitalization (Jo..., jo..., JO...)."""
        if not _is_sqlite(session):
            prefix: ColumnElement[bool] = self.name.ilike(f"{q}%")
            return prefix
        ranges = [
            and_(self.name >= form, self.name < form[:-1] + chr(ord(form[-1]) + 1))
            for form in dict.fromkeys((q, q.lower(), q.capitalize(), q.upper()))
        ]
        return and_(or_(*ranges), func.lower(self.name).like(f"{q.lower()}%"))


_CONTACTS = _Kind(
    Contact.id, Contact.name, (Contact.phone,), ContactEmail.email, ContactEmail.contact_id, "contact_search"
)
_COMPANIES = _Kind(
    Company.id, Company.name, (), CompanyDomain.domain, CompanyDomain.company_id, "company_search"
)
_DEALS = _Kind(Deal.id, Deal.title, (), None, None, "deal_search")


# ---- loading and ranking ----------------------------------------------------------------------------------


def rank(label: str, query: str) -> tuple[int, str]:
    """Name starts with the query, then a word of it does, then anything else; alphabetical within each."""
    low, q = label.lower(), query.lower()
    if low.startswith(q):
        return 0, low
    if any(word.startswith(q) for word in low.split()):
        return 1, low
    return 2, low


def _best(hits: Sequence[Hit], query: str, limit: int) -> list[Hit]:
    return sorted(hits, key=lambda h: rank(h.label, query))[:limit]


def _contacts(session: Session, ids: list[int], q: str, limit: int) -> list[Hit]:
    if not ids:
        return []
    rows = session.execute(
        select(Contact.id, Contact.name, Contact.phone, Company.name)
        .outerjoin(Company, Company.id == Contact.company_id)
        .where(Contact.id.in_(ids))
    ).all()
    addresses: dict[int, list[str]] = {}
    for contact_id, email in session.execute(
        select(ContactEmail.contact_id, ContactEmail.email)
        .where(ContactEmail.contact_id.in_(ids))
        .order_by(ContactEmail.id)
    ):
        addresses.setdefault(contact_id, []).append(email)
    hits = []
    for contact_id, name, phone, company in rows:
        emails = addresses.get(contact_id, [])
        # show the address that matched, else the first one
        shown = next((e for e in emails if q.lower() in e), emails[0] if emails else "")
        if phone and q.lower() in phone.lower() and q.lower() not in (name or "").lower():
            shown = phone
        detail = " · ".join(part for part in (shown, company) if part)
        hits.append(Hit("contact", contact_id, name or shown or f"Contact {contact_id}", detail))
    return _best(hits, q, limit)


def _companies(session: Session, ids: list[int], q: str, limit: int) -> list[Hit]:
    if not ids:
        return []
    rows = session.execute(select(Company.id, Company.name).where(Company.id.in_(ids))).all()
    domains: dict[int, list[str]] = {}
    for company_id, domain in session.execute(
        select(CompanyDomain.company_id, CompanyDomain.domain)
        .where(CompanyDomain.company_id.in_(ids))
        .order_by(CompanyDomain.id)
    ):
        domains.setdefault(company_id, []).append(domain)
    hits = []
    for company_id, name in rows:
        owned = domains.get(company_id, [])
        shown = next((d for d in owned if q.lower() in d), owned[0] if owned else "")
        hits.append(Hit("company", company_id, name or shown, shown))
    return _best(hits, q, limit)


def _deals(session: Session, ids: list[int], q: str, limit: int) -> list[Hit]:
    if not ids:
        return []
    rows = session.execute(
        select(Deal.id, Deal.title, Deal.status, Company.name)
        .outerjoin(Company, Company.id == Deal.company_id)
        .where(Deal.id.in_(ids))
    ).all()
    status_words = {DealStatus.OPEN: "Open", DealStatus.WON: "Won", DealStatus.LOST: "Lost"}
    hits = [
        Hit(
            "deal",
            deal_id,
            title,
            " · ".join(part for part in (company, status_words.get(status, str(status))) if part),
        )
        for deal_id, title, status, company in rows
    ]
    return _best(hits, q, limit)
