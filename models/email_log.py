"""Recording emails in the CRM: the one operation that turns a message into an activity, exactly once.

Both the IMAP sync and the mbox import call `record_email` with plain values (this module knows nothing of
IMAP or MIME). It owns the exactly-once rules: an activity's `content_key` is unique, so the same message seen
in a second mailbox or folder only adds an `EmailSighting`; every message the sync decided about gets a
`SeenMessage` row in the caller's transaction; a message that could not be processed is kept in quarantine
with its raw bytes and retried later. It also owns where an email is filed: contacts (created on demand with
the company of their domain), the company, and the deal (thread first, then the single open deal of a
contact, then of the company; several candidates leave the deal empty and flag the activity for review).

Two syncs may race on PostgreSQL for the same message, contact or company (one rep CC'd another): every
insert that can collide is an INSERT ... ON CONFLICT DO NOTHING on the unique key, and "nothing inserted"
means someone else just made the row, so theirs is read and used. No savepoints: they cost two round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.contacts import company_name_from_domain, display_name_from_email, normalize_domain
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

    `owner` is the mailbox's owner: the author of its outbound mail and the owner of contacts created from it.
    `users` (email -> user) saves a lookup per message when the caller records many. `check_existing=False`
    skips the up-front content-key lookup when the caller just did it in bulk (a message logged meanwhile
    is still caught by the unique key, only after the contacts were looked up).
    Runs in the caller's transaction; nothing is committed here. Writes are plain SQL statements rather
    than ORM units of work (the sync records thousands of messages; the ORM's bookkeeping was most of the
    cost), so ORM objects already loaded in this session may show stale last-activity times.
    """
    content_key = _clip(email.content_key, 1000)
    if check_existing:
        existing = activity_ids_by_content_key(session, [content_key]).get(content_key)
        if existing is not None:
            return _sighted(session, existing, ref, content_key, now)

    created = 0
    companies_created = 0
    contacts: dict[int, int | None] = {}  # contact id -> company id, in participant order
    known = _contacts_by_email(session, [c.email for c in placement.candidates])
    outbound = placement.direction == Direction.OUT.value
    owner_id = owner.id if owner is not None and outbound else None
    for candidate in placement.candidates:
        found = known.get(candidate.email)
        if found is None and candidate.may_create:
            found, made, company_made = _ensure_contact(session, candidate, owner_id=owner_id, now=now)
            created += made
            companies_created += company_made
        if found is not None:
            contacts.setdefault(found[0], found[1])
    if not contacts:
        mark_seen(session, [SeenRow(ref, OUTCOME_SKIPPED, content_key)], now=now)
        return RecordOutcome(OUTCOME_SKIPPED, reason="no contact")

    deal_id, deal_company_id, needs_review = choose_deal(session, email, contacts)
    company_id = deal_company_id or next((c for c in contacts.values() if c is not None), None)
    author_id: int | None = None
    if outbound:
        author: User | None = None
        if placement.author_email and users is not None:
            author = users.get(placement.author_email)
        elif placement.author_email:
            author = session.scalar(select(User).where(User.email == placement.author_email))
        author = author or owner
        author_id = author.id if author is not None else None
    occurred_at = _occurred_at(email.sent_at, now)

    values = dict(
        kind=ActivityKind.EMAIL,
        occurred_at=occurred_at,
        subject=_clip(email.subject, 998),
        body=_clean(email.text),
        author_id=author_id,
        company_id=company_id,
        deal_id=deal_id,
        created_at=now,
        message_id=_clip(email.message_id, 998) if email.message_id else None,
        content_key=content_key,
        thread_key=_clip(email.thread_key, 1000),
        direction=Direction(placement.direction),
        from_address=_clip(email.from_address, 998) if email.from_address else None,
        to_addresses=[_clean(a) for a in email.to_addresses],
        cc_addresses=[_clean(a) for a in email.cc_addresses],
        body_html=_clean(email.html) if email.html is not None else None,
        snippet=_clip(email.snippet, 400),
        truncated=email.truncated,
        needs_deal_review=needs_review,
    )
    # ON CONFLICT rather than a savepoint: two syncs may log the same message at once (one CC'd the other)
    activity_id = session.execute(
        _dialect_insert(session)(_ACTIVITIES)
        .values(values)
        .on_conflict_do_nothing(index_elements=["content_key"])
        .returning(_ACTIVITIES.c.id)
    ).scalar()
    if activity_id is None:
        raced = activity_ids_by_content_key(session, [content_key]).get(content_key)
        if raced is None:
            raise RuntimeError(f"content key {content_key[:80]} is taken but not found")
        return _sighted(session, raced, ref, content_key, now, contacts_created=created)
    session.execute(
        insert(activity_contacts), [{"activity_id": activity_id, "contact_id": c} for c in contacts]
    )
    if email.attachments:
        session.execute(
            insert(_ATTACHMENTS),
            [
                {
                    "activity_id": activity_id,
                    "filename": _clip(item.filename, 500) or "attachment",
                    "content_type": _clip(item.content_type, 200) or "application/octet-stream",
                    "size": item.size,
                    "content": item.content,
                }
                for item in email.attachments
            ],
        )
    add_sightings(session, [(activity_id, ref)], now=now)
    _touch(session, Contact, list(contacts), occurred_at)
    _touch(session, Company, [company_id] if company_id else [], occurred_at)
    _touch(session, Deal, [deal_id] if deal_id else [], occurred_at)
    mark_seen(session, [SeenRow(ref, OUTCOME_LOGGED, content_key, activity_id)], now=now)
    return RecordOutcome(
        OUTCOME_LOGGED,
        activity_id=activity_id,
        contacts_created=created,
        companies_created=companies_created,
        deal_id=deal_id,
        needs_deal_review=needs_review,
    )


def record_sighting(
    session: Session, activity_id: int, ref: MessageRef, content_key: str, *, now: datetime
) -> None:
    """A message already logged from elsewhere, seen again in `ref`: list this mailbox on it."""
    _sighted(session, activity_id, ref, content_key, now)


def choose_deal(
    session: Session, email: EmailData, contacts: Mapping[int, int | None]
) -> tuple[int | None, int | None, bool]:
    """(deal id, its company id, needs review) for an email linked to `contacts` (contact id -> company id).

    The thread decides first (a reply to mail already filed on an open deal); then the single open deal that
    includes one of the contacts; then the single open deal of their companies. Several candidates: no deal,
    and the activity is flagged for a person to pick. Won and lost deals get no new mail automatically.
    """
    thread_ids = [i for i in dict.fromkeys((*email.in_reply_to, *email.references)) if i]
    if thread_ids:
        row = session.execute(
            select(Deal.id, Deal.company_id)
            .join(Activity, Activity.deal_id == Deal.id)
            .where(Activity.message_id.in_(thread_ids), Deal.status == DealStatus.OPEN)
            .order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return row[0], row[1], False
    by_contact = session.execute(
        select(Deal.id, Deal.company_id)
        .join(deal_contacts, deal_contacts.c.deal_id == Deal.id)
        .where(deal_contacts.c.contact_id.in_(list(contacts)), Deal.status == DealStatus.OPEN)
        .distinct()
        .limit(2)
    ).all()
    if len(by_contact) == 1:
        return by_contact[0][0], by_contact[0][1], False
    if len(by_contact) > 1:
        return None, None, True
    company_ids = sorted({c for c in contacts.values() if c is not None})
    if company_ids:
        by_company = session.execute(
            select(Deal.id, Deal.company_id)
            .where(Deal.company_id.in_(company_ids), Deal.status == DealStatus.OPEN)
            .limit(2)
        ).all()
        if len(by_company) == 1:
            return by_company[0][0], by_company[0][1], False
        if len(by_company) > 1:
            return None, None, True
    return None, None, False


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
    insert = _dialect_insert(session)
    keys = ["mailbox", "folder", "uidvalidity", "uid"]
    # SQLite allows 32,766 bound parameters per statement; 8 per row
    for start in range(0, len(values), 2000):
        stmt = insert(SeenMessage).values(values[start : start + 2000])
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
        session.execute(stmt)


def add_sightings(session: Session, sightings: Sequence[tuple[int, MessageRef]], *, now: datetime) -> None:
    """List mailboxes/folders on activities; a pair already listed is left alone."""
    if not sightings:
        return
    values = [
        {"activity_id": activity_id, "mailbox": ref.mailbox, "folder": ref.folder, "seen_at": now}
        for activity_id, ref in sightings
    ]
    stmt = _dialect_insert(session)(EmailSighting).values(values)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["activity_id", "mailbox", "folder"]))


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


def _sighted(
    session: Session,
    activity_id: int,
    ref: MessageRef,
    content_key: str,
    now: datetime,
    contacts_created: int = 0,
) -> RecordOutcome:
    add_sightings(session, [(activity_id, ref)], now=now)
    mark_seen(session, [SeenRow(ref, OUTCOME_DUPLICATE, content_key, activity_id)], now=now)
    return RecordOutcome(OUTCOME_DUPLICATE, activity_id=activity_id, contacts_created=contacts_created)


def _contacts_by_email(session: Session, emails: Sequence[str]) -> dict[str, tuple[int, int | None]]:
    """address -> (contact id, company id) for the addresses that belong to contacts."""
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    rows = session.execute(
        select(ContactEmail.email, Contact.id, Contact.company_id)
        .join(Contact)
        .where(ContactEmail.email.in_(wanted))
    ).all()
    return {email: (contact_id, company_id) for email, contact_id, company_id in rows}


def _ensure_contact(
    session: Session, candidate: ContactCandidate, *, owner_id: int | None, now: datetime
) -> tuple[tuple[int, int | None] | None, int, int]:
    """The contact for an address, made if needed: ((contact id, company id), contacts, companies made)."""
    company_id: int | None = None
    company_made = 0
    if candidate.company_domain:
        company_id, company_made = _ensure_company(
            session, candidate.company_domain, owner_id=owner_id, now=now
        )
    name = _clip(candidate.name, 300).strip() or display_name_from_email(candidate.email)[:300]
    contact_id = int(
        session.execute(
            insert(_CONTACTS)
            .values(name=name, company_id=company_id, owner_id=owner_id, lead_source="email", created_at=now)
            .returning(_CONTACTS.c.id)
        ).scalar_one()
    )
    claimed = session.execute(
        _dialect_insert(session)(_CONTACT_EMAILS)
        .values(contact_id=contact_id, email=candidate.email)
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(_CONTACT_EMAILS.c.id)
    ).scalar()
    if claimed is None:
        # another sync created this contact since our lookup: use theirs, drop the twin we just made
        session.execute(delete(_CONTACTS).where(_CONTACTS.c.id == contact_id))
        found = _contacts_by_email(session, [candidate.email]).get(candidate.email)
        return found, 0, company_made
    return (contact_id, company_id), 1, company_made


def _ensure_company(session: Session, domain: str, *, owner_id: int | None, now: datetime) -> tuple[int, int]:
    """(company id owning the domain, 1 if it was created from the domain just now else 0)."""
    domain = normalize_domain(domain)
    found = _company_id_for_domain(session, domain)
    if found is not None:
        return found, 0
    company_id = int(
        session.execute(
            insert(_COMPANIES)
            .values(name=company_name_from_domain(domain), owner_id=owner_id, created_at=now)
            .returning(_COMPANIES.c.id)
        ).scalar_one()
    )
    claimed = session.execute(
        _dialect_insert(session)(_COMPANY_DOMAINS)
        .values(company_id=company_id, domain=domain)
        .on_conflict_do_nothing(index_elements=["domain"])
        .returning(_COMPANY_DOMAINS.c.id)
    ).scalar()
    if claimed is None:
        # another sync created the company for this domain since our lookup: use theirs
        session.execute(delete(_COMPANIES).where(_COMPANIES.c.id == company_id))
        found = _company_id_for_domain(session, domain)
        if found is None:
            raise RuntimeError(f"company domain {domain} is taken but not found")
        return found, 0
    return company_id, 1


def _company_id_for_domain(session: Session, domain: str) -> int | None:
    return session.scalar(select(CompanyDomain.company_id).where(CompanyDomain.domain == domain))


def _touch(
    session: Session, model: type[Contact | Company | Deal], ids: Sequence[int], when: datetime
) -> None:
    """Move last_activity_at forward (never back: an old email imported late is not news)."""
    if not ids:
        return
    column = model.last_activity_at
    session.execute(
        update(model)
        .where(model.id.in_(ids), or_(column.is_(None), column < when))
        .values(last_activity_at=when)
        .execution_options(synchronize_session=False)
    )


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
