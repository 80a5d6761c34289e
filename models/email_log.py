"""Recording emails in the CRM: the one operation that turns a message into an activity, exactly once.

Both the IMAP sync and the mbox import call `record_emails` (a batch) or `record_email` (one message) with
plain values (this module knows nothing of IMAP or MIME). It owns the exactly-once rules: an activity's
`content_key` is unique, so the same message seen in a second mailbox or folder only adds an `EmailSighting`;
every message the sync decided about gets a `SeenMessage` row in the caller's transaction; a message that
could not be processed is kept in quarantine with its raw bytes and retried later. It also owns where an
email is filed: contacts (created on demand with the company of their domain), the company, and the deal
(thread first, then the single open deal of a contact, then of the company; several candidates leave the
deal empty and flag the activity for review), and the hand-made correction of that (`link_email_to_deal`).

A batch is written with a fixed number of statements whatever its size (one lookup per kind of record, one
INSERT per table for all rows, one grouped UPDATE per table), because on PostgreSQL every statement is a
network round trip and per-message statements were most of the sync's time.

Two syncs may race on PostgreSQL for the same message, contact or company (one rep CC'd another): every
insert that can collide is an INSERT ... ON CONFLICT DO NOTHING on the unique key, rows go in sorted by that
key (so racing syncs wait on each other rather than deadlock), and "nothing inserted" means someone else just
made the row, so theirs is read and used. No savepoints: they cost two round trips.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.activities import touch
from models.contacts import company_name_from_domain, display_name_from_email, normalize_domain
from models.errors import DomainError
from models.schema import (
    Activity,
    ActivityKind,
    Attachment,
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealStatus,
    Direction,
    EmailSighting,
    QuarantinedMessage,
    SeenMessage,
    User,
    activity_contacts,
    deal_contacts,
)

log = logging.getLogger(__name__)

_ACTIVITIES: Table = Activity.__table__  # type: ignore[assignment]
_ATTACHMENTS: Table = Attachment.__table__  # type: ignore[assignment]
_CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
_CONTACT_EMAILS: Table = ContactEmail.__table__  # type: ignore[assignment]
_COMPANIES: Table = Company.__table__  # type: ignore[assignment]
_COMPANY_DOMAINS: Table = CompanyDomain.__table__  # type: ignore[assignment]
_SIGHTINGS: Table = EmailSighting.__table__  # type: ignore[assignment]
_SEEN: Table = SeenMessage.__table__  # type: ignore[assignment]

OUTCOME_LOGGED = "logged"
OUTCOME_DUPLICATE = "duplicate"
OUTCOME_SKIPPED = "skipped"
OUTCOME_QUARANTINED = "quarantined"

# A Date header outside this window is a broken clock or a forgery: the time the sync saw the mail is truer.
_EARLIEST_DATE = datetime(1980, 1, 1, tzinfo=UTC)
_FUTURE_SLACK = timedelta(days=1)
# Quarantined messages are retried after 5 min, 10 min, 20 min, ... at most daily, and given up after this.
QUARANTINE_MAX_ATTEMPTS = 10
_QUARANTINE_FIRST_RETRY = timedelta(minutes=5)
_QUARANTINE_MAX_RETRY = timedelta(days=1)


@dataclass(frozen=True)
class EmailAttachmentData:
    filename: str
    content_type: str
    size: int
    content: bytes | None  # None when over the attachment size limit


@dataclass(frozen=True)
class EmailData:
    """A parsed message, as the CRM stores it."""

    content_key: str
    message_id: str | None
    subject: str
    sent_at: datetime | None  # the Date header, if it could be read
    from_address: str | None
    to_addresses: tuple[str, ...]
    cc_addresses: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str
    html: str | None  # already sanitized
    snippet: str
    attachments: tuple[EmailAttachmentData, ...] = ()
    truncated: bool = False

    @property
    def thread_key(self) -> str:
        """The thread's root: first of References, else In-Reply-To, else this message itself."""
        root = (self.references[:1] or self.in_reply_to[:1] or (self.message_id,))[0]
        return root or self.content_key


@dataclass(frozen=True)
class ContactCandidate:
    """An external participant: linked if already a contact, created if `may_create`."""

    email: str
    name: str  # display name from the message ('' when none)
    may_create: bool
    company_domain: str | None  # None for free-mail addresses: such contacts get no company


@dataclass(frozen=True)
class EmailPlacement:
    direction: str  # 'in' or 'out'
    candidates: tuple[ContactCandidate, ...]
    author_email: str | None = None  # the internal sender of outbound mail


@dataclass(frozen=True)
class MessageRef:
    """Where one copy of a message lives: mailbox, folder and its IMAP (or mbox) identity."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class RecordOutcome:
    outcome: str  # logged | duplicate | skipped
    activity_id: int | None = None
    contacts_created: int = 0
    companies_created: int = 0
    deal_id: int | None = None
    needs_deal_review: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class SeenRow:
    ref: MessageRef
    outcome: str
    content_key: str | None = None
    activity_id: int | None = None


@dataclass(frozen=True)
class PendingQuarantine:
    ref: MessageRef
    attempts: int
    message_id: str | None


# ---- recording ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmailToRecord:
    """One message of a batch: what it says, whom it concerns, and where this copy of it lives."""

    email: EmailData
    placement: EmailPlacement
    ref: MessageRef


def record_email(
    session: Session,
    email: EmailData,
    placement: EmailPlacement,
    *,
    ref: MessageRef,
    now: datetime,
    owner: User | None = None,
    users: Mapping[str, User] | None = None,
    check_existing: bool = True,
) -> RecordOutcome:
    """File one message: a new activity, or a sighting of the one it already is; plus its SeenMessage row.

    A batch of one for `record_emails`, which says what the arguments mean.
    """
    batch = [EmailToRecord(email, placement, ref)]
    return record_emails(session, batch, now=now, owner=owner, users=users, check_existing=check_existing)[0]


def record_emails(
    session: Session,
    messages: Sequence[EmailToRecord],
    *,
    now: datetime,
    owner: User | None = None,
    users: Mapping[str, User] | None = None,
    check_existing: bool = True,
) -> list[RecordOutcome]:
    """File a batch of messages, each as a new activity or a sighting of the one it already is; one outcome
    per message, in order, and a SeenMessage row for each.

    `owner` is the mailbox's owner: the author of its outbound mail and the owner of contacts created from it.
    `users` (email -> user) saves a lookup when the caller records many batches. `check_existing=False`
    skips the up-front content-key lookup when the caller just did it (a message logged meanwhile is still
    caught by the unique key, only after its contacts were made).

    The whole batch costs a fixed number of statements whatever its size (on PostgreSQL each one is a round
    trip): one lookup each for logged content keys, contacts' addresses, company domains and candidate deals,
    one INSERT per table for all its rows, one grouped UPDATE per table for last-activity times. Messages are
    decided in order in memory, so a reply later in the batch follows the deal of a message earlier in it.
    A value the database refuses fails the whole call: callers run it in a savepoint and fall back to
    recording one message at a time, so that only the bad message is set aside.

    Runs in the caller's transaction; nothing is committed here. ORM objects already loaded in this session
    may show stale last-activity times (writes are Core statements: the ORM's bookkeeping was most of the
    cost when the sync records thousands of messages).
    """
    if not messages:
        return []
    keys = [_clip(m.email.content_key, 1000) for m in messages]
    existing = activity_ids_by_content_key(session, keys) if check_existing else {}
    # the first message of the batch with a content key logs it; a later copy is a sighting of it
    leaders: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in existing:
            leaders.setdefault(key, index)
    fresh = sorted(leaders.values())

    contacts_made: Counter[int] = Counter()
    companies_made: Counter[int] = Counter()
    known = _contacts_by_email(session, [c.email for i in fresh for c in messages[i].placement.candidates])
    wanted: dict[str, _NewContact] = {}
    for index in fresh:
        placement = messages[index].placement
        owner_id = owner.id if owner is not None and placement.direction == Direction.OUT.value else None
        for candidate in placement.candidates:
            if candidate.may_create and candidate.email not in known and candidate.email not in wanted:
                wanted[candidate.email] = _NewContact(candidate, owner_id, index)
    if wanted:
        created = _create_contacts(session, list(wanted.values()), now=now)
        known.update(created.found)
        contacts_made.update(wanted[e].index for e in created.contacts)
        companies_made.update(created.companies.values())

    linked: dict[int, dict[int, int | None]] = {}  # message index -> contact id -> company id
    for index in fresh:
        contacts: dict[int, int | None] = {}
        for candidate in messages[index].placement.candidates:
            found = known.get(candidate.email)
            if found is not None:
                contacts.setdefault(found[0], found[1])
        if contacts:
            linked[index] = contacts
    deals = _DealIndex.load(
        session,
        thread_ids=[
            t for i in linked for t in (*messages[i].email.in_reply_to, *messages[i].email.references)
        ],
        contact_ids=[c for contacts in linked.values() for c in contacts],
        company_ids=[c for contacts in linked.values() for c in contacts.values() if c is not None],
    )
    authors = _authors(session, messages, list(linked), owner, users)

    rows: dict[int, dict[str, Any]] = {}  # message index -> its activity row
    placed: dict[int, tuple[int | None, bool]] = {}  # message index -> (deal id, needs review)
    for index, contacts in linked.items():
        email, placement = messages[index].email, messages[index].placement
        deal_id, deal_company_id, needs_review = deals.choose(email, contacts)
        occurred_at = _occurred_at(email.sent_at, now)
        rows[index] = _activity_row(
            email,
            placement,
            key=keys[index],
            occurred_at=occurred_at,
            author_id=authors.get(index),
            company_id=deal_company_id or next((c for c in contacts.values() if c is not None), None),
            deal_id=deal_id,
            needs_review=needs_review,
            now=now,
        )
        placed[index] = (deal_id, needs_review)
        if deal_id is not None and email.message_id:
            deals.add_thread(email.message_id, occurred_at, index, deal_id, deal_company_id)

    inserted = _insert_activities(session, list(rows.values()))
    # another sync logged some of these since the lookup (one rep CC'd another): theirs stand, ours are
    # sightings of them
    raced = [keys[i] for i in rows if keys[i] not in inserted]
    if raced:
        taken = activity_ids_by_content_key(session, raced)
        missing = [k for k in raced if k not in taken]
        if missing:
            raise RuntimeError(f"content key {missing[0][:80]} is taken but not found")
        existing = {**existing, **taken}

    outcomes: list[RecordOutcome] = []
    seen: list[SeenRow] = []
    sightings: list[tuple[int, MessageRef]] = []
    links: list[dict[str, int]] = []
    attachments: list[dict[str, Any]] = []
    touched: dict[type[Contact | Company | Deal], dict[int, datetime]] = {Contact: {}, Company: {}, Deal: {}}
    for index, message in enumerate(messages):
        key, ref = keys[index], message.ref
        leader = leaders.get(key, index)
        made = contacts_made[index]
        activity_id = existing.get(key) or inserted.get(key)
        if activity_id is None:
            seen.append(SeenRow(ref, OUTCOME_SKIPPED, key))
            outcomes.append(RecordOutcome(OUTCOME_SKIPPED, contacts_created=made, reason="no contact"))
            continue
        sightings.append((activity_id, ref))
        if leader != index or key in existing:
            seen.append(SeenRow(ref, OUTCOME_DUPLICATE, key, activity_id))
            outcomes.append(RecordOutcome(OUTCOME_DUPLICATE, activity_id=activity_id, contacts_created=made))
            continue
        row, (deal_id, needs_review) = rows[index], placed[index]
        seen.append(SeenRow(ref, OUTCOME_LOGGED, key, activity_id))
        links.extend({"activity_id": activity_id, "contact_id": c} for c in linked[index])
        attachments.extend(_attachment_row(activity_id, item) for item in message.email.attachments)
        when = row["occurred_at"]
        for model, ids in ((Contact, linked[index]), (Company, [row["company_id"]]), (Deal, [deal_id])):
            for record_id in ids:
                if record_id is not None and (
                    record_id not in touched[model] or touched[model][record_id] < when
                ):
                    touched[model][record_id] = when
        outcomes.append(
            RecordOutcome(
                OUTCOME_LOGGED,
                activity_id=activity_id,
                contacts_created=made,
                companies_created=companies_made[index],
                deal_id=deal_id,
                needs_deal_review=needs_review,
            )
        )
    if links:
        session.execute(insert(activity_contacts), links)
    if attachments:
        session.execute(insert(_ATTACHMENTS), attachments)
    add_sightings(session, sightings, now=now)
    mark_seen(session, seen, now=now)
    for model, when_by_id in touched.items():
        _touch(session, model, when_by_id)
    return outcomes


def record_sighting(
    session: Session, activity_id: int, ref: MessageRef, content_key: str, *, now: datetime
) -> None:
    """A message already logged from elsewhere, seen again in `ref`: list this mailbox on it."""
    add_sightings(session, [(activity_id, ref)], now=now)
    mark_seen(session, [SeenRow(ref, OUTCOME_DUPLICATE, content_key, activity_id)], now=now)


def link_email_to_deal(
    session: Session, activity: Activity, deal: Deal, *, now: datetime, by: User | None
) -> None:
    """File an email on the deal a person chose (any deal: unlike the sync, a person may pick a won or lost
    one); the review flag is cleared and the deal counts as touched by the email."""
    if activity.kind != ActivityKind.EMAIL:
        raise DomainError("only an email can be linked to a deal this way")
    activity.deal = deal
    activity.needs_deal_review = False
    if activity.company_id is None:
        activity.company_id = deal.company_id
    # a Date header a day ahead is accepted when logging; a deal's last activity is never in the future
    touch([deal], min(activity.occurred_at, now))
    session.flush()
    log.info(
        "email %s linked to deal %s by %s", activity.id, deal.id, by.email if by is not None else "the system"
    )


# ---- where a batch is filed -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NewContact:
    candidate: ContactCandidate
    owner_id: int | None  # the mailbox owner for people the team wrote to, else nobody
    index: int  # the first message of the batch that makes this contact


@dataclass(frozen=True)
class _MadeContacts:
    found: dict[str, tuple[int, int | None]]  # address -> (contact id, company id), ours or a racing sync's
    contacts: set[str]  # the addresses whose contact was made here
    companies: dict[str, int]  # domain of a company made here -> index of the message it was made for


# far above any real id: an activity of this batch sorts after every stored one with the same time
_BATCH_ID_BASE = 2**62


@dataclass
class _DealIndex:
    """Candidate open deals of a batch, loaded in three queries; messages then pick theirs in memory."""

    # thread message id -> (occurred_at, activity id, deal id, company id) of the latest email with a deal
    threads: dict[str, tuple[datetime, int, int, int | None]]
    by_contact: dict[int, set[tuple[int, int | None]]]  # contact id -> (deal id, company id)
    by_company: dict[int, set[int]]  # company id -> deal ids

    @classmethod
    def load(
        cls,
        session: Session,
        *,
        thread_ids: Iterable[str],
        contact_ids: Iterable[int],
        company_ids: Iterable[int],
    ) -> _DealIndex:
        index = cls({}, {}, {})
        for chunk in _chunks(sorted({t for t in thread_ids if t})):
            for message_id, occurred_at, activity_id, deal_id, company_id in session.execute(
                select(Activity.message_id, Activity.occurred_at, Activity.id, Deal.id, Deal.company_id)
                .join(Deal, Activity.deal_id == Deal.id)
                .where(Activity.message_id.in_(chunk), Deal.status == DealStatus.OPEN)
            ):
                index._add(message_id, (occurred_at, activity_id, deal_id, company_id))
        for chunk in _chunks(sorted(set(contact_ids))):
            for contact_id, deal_id, company_id in session.execute(
                select(deal_contacts.c.contact_id, Deal.id, Deal.company_id)
                .join(Deal, deal_contacts.c.deal_id == Deal.id)
                .where(deal_contacts.c.contact_id.in_(chunk), Deal.status == DealStatus.OPEN)
            ):
                index.by_contact.setdefault(contact_id, set()).add((deal_id, company_id))
        for chunk in _chunks(sorted(set(company_ids))):
            for deal_company_id, deal_id in session.execute(
                select(Deal.company_id, Deal.id).where(
                    Deal.company_id.in_(chunk), Deal.status == DealStatus.OPEN
                )
            ):
                if deal_company_id is not None:
                    index.by_company.setdefault(deal_company_id, set()).add(deal_id)
        return index

    def choose(
        self, email: EmailData, contacts: Mapping[int, int | None]
    ) -> tuple[int | None, int | None, bool]:
        """(deal id, its company id, needs review) for an email linked to `contacts` (contact id -> company).

        The thread decides first (a reply to mail already filed on an open deal); then the single open deal
        that includes one of the contacts; then the single open deal of their companies. Several candidates:
        no deal, and the activity is flagged for a person to pick. Won and lost deals get no mail by
        themselves: only open deals are loaded.
        """
        thread = [self.threads[t] for t in (*email.in_reply_to, *email.references) if t in self.threads]
        if thread:
            _, _, deal_id, company_id = max(thread, key=lambda entry: (entry[0], entry[1]))
            return deal_id, company_id, False
        by_contact = {deal for c in contacts for deal in self.by_contact.get(c, ())}
        if len(by_contact) == 1:
            deal_id, company_id = next(iter(by_contact))
            return deal_id, company_id, False
        if by_contact:
            return None, None, True
        company_ids = {c for c in contacts.values() if c is not None}
        by_company = {(d, c) for c in company_ids for d in self.by_company.get(c, ())}
        if len(by_company) == 1:
            deal_id, company_id = next(iter(by_company))
            return deal_id, company_id, False
        return None, None, bool(by_company)

    def add_thread(
        self, message_id: str, occurred_at: datetime, index: int, deal_id: int, company_id: int | None
    ) -> None:
        """A message of this batch filed on a deal: later replies in the batch follow it."""
        self._add(_clip(message_id, 998), (occurred_at, _BATCH_ID_BASE + index, deal_id, company_id))

    def _add(self, message_id: str | None, entry: tuple[datetime, int, int, int | None]) -> None:
        if not message_id:
            return
        current = self.threads.get(message_id)
        if current is None or (entry[0], entry[1]) > (current[0], current[1]):
            self.threads[message_id] = entry


def _create_contacts(session: Session, wanted: Sequence[_NewContact], *, now: datetime) -> _MadeContacts:
    """Make the contacts of a batch (and the companies of their domains) with one INSERT per table.

    Rows go in sorted by address and domain, so two syncs making the same ones wait on each other in the
    same order instead of deadlocking; an address or domain a racing sync claimed first is theirs: our twin
    row is deleted and theirs read back.
    """
    company_of: dict[str, int] = {}
    made_companies: dict[str, int] = {}
    domain_owner: dict[str, tuple[int | None, int]] = {}  # domain -> (owner id, index of the message)
    for new in wanted:
        if new.candidate.company_domain:
            domain_owner.setdefault(normalize_domain(new.candidate.company_domain), (new.owner_id, new.index))
    if domain_owner:
        company_of = _companies_by_domain(session, domain_owner)
        missing = sorted(d for d in domain_owner if d not in company_of)
        if missing:
            ids = _insert_returning_ids(
                session,
                _COMPANIES,
                [
                    {"name": company_name_from_domain(d), "owner_id": domain_owner[d][0], "created_at": now}
                    for d in missing
                ],
            )
            claimed = _claim(
                session, _COMPANY_DOMAINS, "domain", "company_id", dict(zip(missing, ids, strict=True))
            )
            twins = [company_id for d, company_id in zip(missing, ids, strict=True) if d not in claimed]
            if twins:
                session.execute(delete(_COMPANIES).where(_COMPANIES.c.id.in_(twins)))
            company_of.update(claimed)
            lost = [d for d in missing if d not in claimed]
            if lost:
                company_of.update(_companies_by_domain(session, lost))
                if any(d not in company_of for d in lost):
                    raise RuntimeError(f"company domain {lost[0]} is taken but not found")
            made_companies = {d: domain_owner[d][1] for d in claimed}

    people = sorted(wanted, key=lambda new: new.candidate.email)
    companies = [
        company_of.get(normalize_domain(p.candidate.company_domain)) if p.candidate.company_domain else None
        for p in people
    ]
    ids = _insert_returning_ids(
        session,
        _CONTACTS,
        [
            {
                "name": _clip(p.candidate.name, 300).strip()
                or display_name_from_email(p.candidate.email)[:300],
                "company_id": company_id,
                "owner_id": p.owner_id,
                "lead_source": "email",
                "created_at": now,
            }
            for p, company_id in zip(people, companies, strict=True)
        ],
    )
    addresses = [p.candidate.email for p in people]
    claimed = _claim(session, _CONTACT_EMAILS, "email", "contact_id", dict(zip(addresses, ids, strict=True)))
    found = {
        email: (contact_id, company_id)
        for email, contact_id, company_id in zip(addresses, ids, companies, strict=True)
        if email in claimed
    }
    twins = [contact_id for email, contact_id in zip(addresses, ids, strict=True) if email not in claimed]
    if twins:
        # another sync made these contacts since our lookup: use theirs, drop the twins we just made
        session.execute(delete(_CONTACTS).where(_CONTACTS.c.id.in_(twins)))
        found.update(_contacts_by_email(session, [e for e in addresses if e not in claimed]))
    return _MadeContacts(found, set(claimed), made_companies)


def _insert_returning_ids(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert rows with one statement and return their new ids in the rows' order.

    The ids are reserved first (a multi-row INSERT's RETURNING promises no order, and SQLAlchemy's way of
    keeping it on SQLite is one INSERT per row): from the sequence on PostgreSQL; on SQLite, where this
    transaction holds the database's write lock, as the ids SQLite would pick itself (max + 1, ...).
    """
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        ids = sorted(
            int(i)
            for i in session.scalars(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                {"table": table.name, "n": len(rows)},
            )
        )
    else:
        top = int(session.scalar(select(func.max(table.c.id))) or 0)
        ids = list(range(top + 1, top + len(rows) + 1))
    session.execute(table.insert(), [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
    return ids


def _claim(session: Session, table: Table, key: str, owner: str, wanted: Mapping[str, int]) -> dict[str, int]:
    """INSERT ... ON CONFLICT DO NOTHING of unique keys (address, domain) -> owner id: the keys we got."""
    if not wanted:
        return {}
    stmt = (
        _dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(table.c[key], table.c[owner])
    )
    rows = [{key: k, owner: v} for k, v in sorted(wanted.items())]
    return {k: int(v) for k, v in session.execute(stmt, rows)}


def _insert_activities(session: Session, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """content key -> new activity id; a key another sync logged meanwhile is left out (ON CONFLICT)."""
    if not rows:
        return {}
    stmt = (
        _dialect_insert(session)(_ACTIVITIES)
        .on_conflict_do_nothing(index_elements=["content_key"])
        .returning(_ACTIVITIES.c.content_key, _ACTIVITIES.c.id)
    )
    ordered = sorted(rows, key=lambda row: str(row["content_key"]))  # the same lock order in racing syncs
    return {key: int(activity_id) for key, activity_id in session.execute(stmt, ordered)}


def _activity_row(
    email: EmailData,
    placement: EmailPlacement,
    *,
    key: str,
    occurred_at: datetime,
    author_id: int | None,
    company_id: int | None,
    deal_id: int | None,
    needs_review: bool,
    now: datetime,
) -> dict[str, Any]:
    return {
        "kind": ActivityKind.EMAIL,
        "occurred_at": occurred_at,
        "subject": _clip(email.subject, 998),
        "body": _clean(email.text),
        "author_id": author_id,
        "company_id": company_id,
        "deal_id": deal_id,
        "created_at": now,
        "message_id": _clip(email.message_id, 998) if email.message_id else None,
        "content_key": key,
        "thread_key": _clip(email.thread_key, 1000),
        "direction": Direction(placement.direction),
        "from_address": _clip(email.from_address, 998) if email.from_address else None,
        "to_addresses": [_clean(a) for a in email.to_addresses],
        "cc_addresses": [_clean(a) for a in email.cc_addresses],
        "body_html": _clean(email.html) if email.html is not None else None,
        "snippet": _clip(email.snippet, 400),
        "truncated": email.truncated,
        "needs_deal_review": needs_review,
    }


def _attachment_row(activity_id: int, item: EmailAttachmentData) -> dict[str, Any]:
    return {
        "activity_id": activity_id,
        "filename": _clip(item.filename, 500) or "attachment",
        "content_type": _clip(item.content_type, 200) or "application/octet-stream",
        "size": item.size,
        "content": item.content,
    }


def _authors(
    session: Session,
    messages: Sequence[EmailToRecord],
    indexes: Sequence[int],
    owner: User | None,
    users: Mapping[str, User] | None,
) -> dict[int, int]:
    """message index -> author user id for the outbound messages: the internal sender, else the owner."""
    outbound = [i for i in indexes if messages[i].placement.direction == Direction.OUT.value]
    if users is None:
        wanted = sorted({a for i in outbound if (a := messages[i].placement.author_email)})
        users = (
            {u.email: u for u in session.scalars(select(User).where(User.email.in_(wanted)))}
            if wanted
            else {}
        )
    authors: dict[int, int] = {}
    for index in outbound:
        address = messages[index].placement.author_email
        author = (users.get(address) if address else None) or owner
        if author is not None:
            authors[index] = author.id
    return authors


# ---- bulk helpers for the sync --------------------------------------------------------------------------


def activity_ids_by_content_key(session: Session, keys: Iterable[str]) -> dict[str, int]:
    """Which of these messages are already activities, in one query."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    rows = session.execute(
        select(Activity.content_key, Activity.id).where(Activity.content_key.in_(wanted))
    ).all()
    return {key: activity_id for key, activity_id in rows if key is not None}


def known_contact_emails(session: Session, emails: Iterable[str]) -> set[str]:
    """Which of these addresses belong to contacts, in one query."""
    wanted = sorted({e for e in emails if e})
    if not wanted:
        return set()
    return set(session.scalars(select(ContactEmail.email).where(ContactEmail.email.in_(wanted))))


def mark_seen(session: Session, rows: Sequence[SeenRow], *, now: datetime, replace: bool = False) -> None:
    """Insert SeenMessage rows; an existing row is kept (or, with replace, given the new outcome)."""
    if not rows:
        return
    values = [
        {
            "mailbox": r.ref.mailbox,
            "folder": r.ref.folder,
            "uidvalidity": r.ref.uidvalidity,
            "uid": r.ref.uid,
            "content_key": _clip(r.content_key, 1000) if r.content_key else None,
            "outcome": r.outcome,
            "activity_id": r.activity_id,
            "seen_at": now,
        }
        for r in rows
    ]
    stmt = _dialect_insert(session)(_SEEN)
    keys = ["mailbox", "folder", "uidvalidity", "uid"]
    if replace:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={
                "outcome": stmt.excluded.outcome,
                "content_key": stmt.excluded.content_key,
                "activity_id": stmt.excluded.activity_id,
                "seen_at": stmt.excluded.seen_at,
            },
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    session.execute(stmt, values)


def add_sightings(session: Session, sightings: Sequence[tuple[int, MessageRef]], *, now: datetime) -> None:
    """List mailboxes/folders on activities; a pair already listed is left alone."""
    pairs = sorted({(activity_id, ref.mailbox, ref.folder) for activity_id, ref in sightings})
    if not pairs:
        return
    stmt = _dialect_insert(session)(_SIGHTINGS).on_conflict_do_nothing(
        index_elements=["activity_id", "mailbox", "folder"]
    )
    session.execute(
        stmt,
        [
            {"activity_id": a, "mailbox": mailbox, "folder": folder, "seen_at": now}
            for a, mailbox, folder in pairs
        ],
    )


# ---- quarantine -----------------------------------------------------------------------------------------


def quarantine_message(
    session: Session,
    ref: MessageRef,
    *,
    raw: bytes,
    reason: str,
    message_id: str | None,
    now: datetime,
) -> QuarantinedMessage:
    """Set a message aside with its raw bytes and the reason; a repeat failure counts one more attempt."""
    reason = _clean(reason)[:2000] or "unknown error"
    message_id = _clip(message_id, 998) if message_id else None
    row = _quarantine_row(session, ref)
    if row is None:
        row = QuarantinedMessage(
            mailbox=ref.mailbox, folder=ref.folder, uidvalidity=ref.uidvalidity, uid=ref.uid,
            message_id=message_id, reason=reason, raw=raw, attempts=1, created_at=now, last_attempt_at=now,
        )  # fmt: skip
        try:
            with _race_guard(session):
                session.add(row)
                session.flush()
        except IntegrityError:
            row = _quarantine_row(session, ref)
            if row is None:
                raise
            _count_attempt(row, raw, reason, now)
    else:
        _count_attempt(row, raw, reason, now)
    mark_seen(session, [SeenRow(ref, OUTCOME_QUARANTINED)], now=now, replace=True)
    return row


def resolve_quarantine(session: Session, ref: MessageRef, *, now: datetime) -> bool:
    """A quarantined message went through on retry: mark it resolved (its raw bytes are no longer needed)."""
    result = session.execute(
        update(QuarantinedMessage)
        .where(
            QuarantinedMessage.mailbox == ref.mailbox,
            QuarantinedMessage.folder == ref.folder,
            QuarantinedMessage.uidvalidity == ref.uidvalidity,
            QuarantinedMessage.uid == ref.uid,
            QuarantinedMessage.resolved_at.is_(None),
        )
        .values(resolved_at=now, raw=b"")
    )
    return bool(getattr(result, "rowcount", 0))


def quarantine_retry_delay(attempts: int) -> timedelta:
    delay: timedelta = _QUARANTINE_FIRST_RETRY * (2 ** min(max(0, attempts - 1), 20))
    return min(delay, _QUARANTINE_MAX_RETRY)


def pending_quarantine(session: Session, mailbox: str, *, now: datetime) -> list[PendingQuarantine]:
    """Unresolved quarantined messages of a mailbox whose next retry is due (without loading raw bytes)."""
    rows = session.execute(
        select(
            QuarantinedMessage.folder,
            QuarantinedMessage.uidvalidity,
            QuarantinedMessage.uid,
            QuarantinedMessage.attempts,
            QuarantinedMessage.last_attempt_at,
            QuarantinedMessage.message_id,
        )
        .where(QuarantinedMessage.mailbox == mailbox, QuarantinedMessage.resolved_at.is_(None))
        .order_by(QuarantinedMessage.id)
    ).all()
    return [
        PendingQuarantine(MessageRef(mailbox, folder, uidvalidity, uid), attempts, message_id)
        for folder, uidvalidity, uid, attempts, last_attempt_at, message_id in rows
        if attempts < QUARANTINE_MAX_ATTEMPTS and last_attempt_at + quarantine_retry_delay(attempts) <= now
    ]


def quarantined_raw(session: Session, ref: MessageRef) -> bytes | None:
    row = _quarantine_row(session, ref)
    return row.raw if row is not None else None


# ---- internals ------------------------------------------------------------------------------------------


def _contacts_by_email(session: Session, emails: Sequence[str]) -> dict[str, tuple[int, int | None]]:
    """address -> (contact id, company id) for the addresses that belong to contacts."""
    found: dict[str, tuple[int, int | None]] = {}
    for chunk in _chunks(sorted(set(emails))):
        rows = session.execute(
            select(ContactEmail.email, Contact.id, Contact.company_id)
            .join(Contact)
            .where(ContactEmail.email.in_(chunk))
        ).all()
        found.update((email, (contact_id, company_id)) for email, contact_id, company_id in rows)
    return found


def _companies_by_domain(session: Session, domains: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(set(domains))):
        found.update(
            (domain, company_id)
            for domain, company_id in session.execute(
                select(CompanyDomain.domain, CompanyDomain.company_id).where(CompanyDomain.domain.in_(chunk))
            )
        )
    return found


def _touch(
    session: Session, model: type[Contact | Company | Deal], when_by_id: Mapping[int, datetime]
) -> None:
    """Move last_activity_at forward (never back: an old email imported late is not news), one statement
    for the batch (executemany: one pipelined round trip on PostgreSQL), in id order so that two syncs lock
    the rows in the same order."""
    if not when_by_id:
        return
    table: Table = model.__table__  # type: ignore[assignment]
    when = bindparam("touched_at", type_=table.c.last_activity_at.type)
    stmt = (
        update(table)
        .where(
            table.c.id == bindparam("touched_id"),
            or_(table.c.last_activity_at.is_(None), table.c.last_activity_at < when),
        )
        .values(last_activity_at=when)
    )
    session.execute(stmt, [{"touched_id": i, "touched_at": w} for i, w in sorted(when_by_id.items())])


def _chunks(values: Sequence[Any], size: int = 5000) -> Iterable[Sequence[Any]]:
    """IN lists in pieces: SQLite allows 32,766 bound parameters per statement."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _quarantine_row(session: Session, ref: MessageRef) -> QuarantinedMessage | None:
    return session.scalar(
        select(QuarantinedMessage).where(
            QuarantinedMessage.mailbox == ref.mailbox,
            QuarantinedMessage.folder == ref.folder,
            QuarantinedMessage.uidvalidity == ref.uidvalidity,
            QuarantinedMessage.uid == ref.uid,
        )
    )


def _count_attempt(row: QuarantinedMessage, raw: bytes, reason: str, now: datetime) -> None:
    row.attempts = (row.attempts or 0) + 1
    row.reason = reason
    row.last_attempt_at = now
    row.resolved_at = None
    if raw:
        row.raw = raw


def _occurred_at(sent_at: datetime | None, now: datetime) -> datetime:
    if sent_at is None or sent_at.tzinfo is None:
        return now
    if sent_at < _EARLIEST_DATE or sent_at > now + _FUTURE_SLACK:
        return now
    return sent_at.astimezone(UTC)


def _clean(value: str | None) -> str:
    # PostgreSQL text cannot hold NUL; broken mail sometimes carries it
    return (value or "").replace("\x00", "")


def _clip(value: str | None, limit: int) -> str:
    return _clean(value)[:limit]


def _race_guard(session: Session) -> AbstractContextManager[Any]:
    """A savepoint around an insert that a concurrent writer may collide with.

    SQLite writers hold the database lock for the whole transaction (BEGIN IMMEDIATE), so no other writer
    can collide there and the savepoint's two extra statements per insert are skipped.
    """
    if session.get_bind().dialect.name == "sqlite":
        return nullcontext()
    return session.begin_nested()


def _dialect_insert(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
