"""Recording emails in the CRM: the one operation that turns a message into an activity, exactly once.

Both the IMAP sync and the mbox import call `record_emails` (a batch) or `record_email` (one message) with
the message vocabulary of models.messages (this module knows nothing of IMAP or MIME). Matching has already
decided whom each message is filed on (its `Placement`); recording carries that out without deciding again:
it creates the contacts the placement names (with the company of their domain, models.domains), links the
ones it names, and picks the deal (thread first, then the single open deal of a contact, then of the
company; several candidates leave the deal empty and flag the activity for review). It also owns the
exactly-once rules: an activity's `content_key` is unique, so the same message seen in a second mailbox or
folder only adds an `EmailSighting`; every message the sync decided about gets a `SeenMessage` row in the
caller's transaction; a message that could not be processed is kept in quarantine with its raw bytes and
retried later. And the hand-made correction of the deal (`link_email_to_deal`).

A batch is written with a fixed number of statements whatever its size (one lookup per kind of record, one
INSERT per table for all rows, one grouped UPDATE per table), because on PostgreSQL every statement is a
network round trip and per-message statements were most of the sync's time. Lookups by lists of values are
chunked (models.db.chunked), so a message with thousands of recipients cannot exceed a database's limit on
bound variables.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.activities import touch
from models.contacts import (
    CompanyToCreate,
    ContactToCreate,
    company_ids_by_domain,
    contact_ids_by_email,
    create_companies,
    create_contacts,
    display_name_from_email,
    mark_bounced,
)
from models.db import chunked, dialect_insert
from models.domains import company_name_from_domain, lookup_domains
from models.errors import DomainError
from models.merge import resolve_merged
from models.messages import (
    Attachment as AttachmentData,
)
from models.messages import (
    Direction,
    Email,
    EmailToRecord,
    MessageRef,
    NewContact,
    Outcome,
    Placement,
    QuarantineReason,
    SkipReason,
)
from models.schema import (
    Activity,
    ActivityKind,
    Attachment,
    Company,
    Contact,
    Deal,
    DealStatus,
    EmailSighting,
    QuarantinedMessage,
    SeenMessage,
    User,
    activity_contacts,
    deal_contacts,
)
from models.webhooks import announce_activities

log = logging.getLogger(__name__)

_ACTIVITIES: Table = Activity.__table__  # type: ignore[assignment]
_ATTACHMENTS: Table = Attachment.__table__  # type: ignore[assignment]
_SIGHTINGS: Table = EmailSighting.__table__  # type: ignore[assignment]
_SEEN: Table = SeenMessage.__table__  # type: ignore[assignment]
_QUARANTINE: Table = QuarantinedMessage.__table__  # type: ignore[assignment]

# A Date header outside this window is a broken clock or a forgery: the time the sync saw the mail is truer.
_EARLIEST_DATE = datetime(1980, 1, 1, tzinfo=UTC)
_FUTURE_SLACK = timedelta(days=1)
# Quarantined messages are retried after 5 min, 10 min, 20 min, ... at most daily, and given up after this.
QUARANTINE_MAX_ATTEMPTS = 10
_QUARANTINE_FIRST_RETRY = timedelta(minutes=5)
_QUARANTINE_MAX_RETRY = timedelta(days=1)

ContactIds = Mapping[str, tuple[int, int | None]]  # address -> (contact id, company id)


@dataclass(frozen=True)
class RecordOutcome:
    """What recording did with one message. QUARANTINED means it could not be filed as decided (a contact it
    was to be linked to is gone): nothing was written for it and the caller sets it aside with `reason`."""

    outcome: Outcome
    activity_id: int | None = None
    contacts_created: int = 0
    companies_created: int = 0
    deal_id: int | None = None
    needs_deal_review: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Recorded:
    """The outcome of each message of a batch, in order, and the contacts the batch made (address ->
    (contact id, company id)): later batches of the same run link them without looking them up."""

    outcomes: list[RecordOutcome]
    contacts: dict[str, tuple[int, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class SeenRow:
    ref: MessageRef
    outcome: Outcome
    content_key: str | None = None
    activity_id: int | None = None


@dataclass(frozen=True)
class PendingQuarantine:
    ref: MessageRef
    attempts: int
    message_id: str | None
    reason: str


# ---- recording ------------------------------------------------------------------------------------------


def record_email(
    session: Session,
    email: Email,
    placement: Placement,
    *,
    ref: MessageRef,
    now: datetime,
    owner: User | None = None,
    contacts: ContactIds | None = None,
    users: Mapping[str, User] | None = None,
) -> RecordOutcome:
    """File one message: a new activity, or a sighting of the one it already is; plus its SeenMessage row.

    A batch of one for `record_emails`, which says what the arguments mean.
    """
    batch = [EmailToRecord(email, placement, ref)]
    return record_emails(session, batch, now=now, owner=owner, contacts=contacts, users=users).outcomes[0]


def record_emails(
    session: Session,
    messages: Sequence[EmailToRecord],
    *,
    now: datetime,
    owner: User | None = None,
    contacts: ContactIds | None = None,
    users: Mapping[str, User] | None = None,
    checked_keys: Iterable[str] = (),
    deals_as_of_sent: bool = False,
) -> Recorded:
    """File a batch of messages, each as a new activity or a sighting of the one it already is, as their
    placements say; one outcome per message, in order, and a SeenMessage row for each one filed.

    `deals_as_of_sent` (earlier mail logged late, daemon.relink): the deal rules apply as of each message's
    date, among the deals that existed and were open then (won and lost ones included), instead of today's
    open deals.

    `contacts` is the caller's lookup of the addresses its placements link (address -> (contact id, company
    id)), so that they are looked up once per batch, where matching needed them; None looks up every address
    the placements name here.
    `owner` is the mailbox's owner: the author of its outbound mail and the owner of contacts created from it.
    `users` (email -> user) saves a lookup when the caller records many batches. `checked_keys` are content
    keys the caller already found not logged (a message logged meanwhile is still caught by the unique key,
    only after its contacts were made).

    The whole batch costs a fixed number of statements whatever its size (on PostgreSQL each one is a round
    trip): one lookup each for logged content keys, company domains and candidate deals, one INSERT per table
    for all its rows, one grouped UPDATE per table for last-activity times. Messages are filed in order in
    memory, so a reply later in the batch follows the deal of a message earlier in it. A value the database
    refuses fails the whole call: callers run it in a savepoint and fall back to recording one message at a
    time, so that only the bad message is set aside.

    Runs in the caller's transaction; nothing is committed here. ORM objects already loaded in this session
    may show stale last-activity times (writes are Core statements: the ORM's bookkeeping was most of the
    cost when the sync records thousands of messages).
    """
    if not messages:
        return Recorded([])
    keys = [_clip(m.email.content_key, 1000) for m in messages]
    checked = set(checked_keys)
    existing = activity_ids_by_content_key(session, [k for k in keys if k not in checked])
    # the first message of the batch with a content key logs it; a later copy is a sighting of it
    leaders: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key not in existing:
            leaders.setdefault(key, index)
    fresh = sorted(leaders.values())

    known: dict[str, tuple[int, int | None]] = dict(
        contacts
        if contacts is not None
        else contact_ids_by_email(session, [a for i in fresh for a in _addresses(messages[i].placement)])
    )
    known = resolve_merged(session, known)  # contacts and companies merged since the caller looked them up
    made = _make_contacts(session, messages, fresh, known, owner, now)
    known.update(made.found)

    linked: dict[int, dict[int, int | None]] = {}  # message index -> contact id -> company id
    gone: dict[int, str] = {}  # message index -> an address it was to be linked to that is no contact now
    for index in fresh:
        placement = messages[index].placement
        ids: dict[int, int | None] = {}
        for address in _addresses(placement):
            found = known.get(address)
            if found is None:
                gone.setdefault(index, address)
            else:
                ids.setdefault(found[0], found[1])
        if index not in gone:
            linked[index] = ids
    deals = _DealIndex.load(
        session,
        thread_ids=[t for i in linked for t in _thread_ids(messages[i].email)],
        contact_ids=[c for ids in linked.values() for c in ids],
        company_ids=[c for ids in linked.values() for c in ids.values() if c is not None],
        as_of=deals_as_of_sent,
    )
    authors = _authors(session, messages, list(linked), owner, users)

    rows: dict[int, dict[str, Any]] = {}  # message index -> its activity row
    placed: dict[int, tuple[int | None, bool]] = {}  # message index -> (deal id, needs review)
    unfiled: set[int] = set()  # thread-only replies whose thread is on no open deal after all: not logged
    for index, ids in linked.items():
        email, placement = messages[index].email, messages[index].placement
        when = _occurred_at(email.headers.date, now) if deals_as_of_sent else None
        deal_id, deal_company_id, needs_review = deals.choose(email, ids, when)
        if placement.thread_only and deal_id is None:
            unfiled.add(index)
            continue
        occurred_at = _occurred_at(email.headers.date, now)
        rows[index] = _activity_row(
            email,
            placement,
            key=keys[index],
            occurred_at=occurred_at,
            author_id=authors.get(index),
            company_id=deal_company_id or next((c for c in ids.values() if c is not None), None),
            deal_id=deal_id,
            needs_review=needs_review,
            now=now,
        )
        placed[index] = (deal_id, needs_review)
        if deal_id is not None and email.headers.message_id:
            deals.add_thread(email.headers.message_id, occurred_at, index, deal_id, deal_company_id)

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
    touched: dict[type[Any], dict[int, datetime]] = {Contact: {}, Company: {}, Deal: {}}
    for index, message in enumerate(messages):
        key, ref = keys[index], message.ref
        leader = leaders.get(key, index)
        contacts_made = made.contacts[index]
        activity_id = existing.get(key) or inserted.get(key)
        if activity_id is None and leader in unfiled:
            seen.append(SeenRow(ref, Outcome.SKIPPED, key))
            outcomes.append(RecordOutcome(Outcome.SKIPPED, reason=SkipReason.NO_CONTACT.value))
            continue
        if activity_id is None:
            reason = QuarantineReason.CONTACT_GONE.because(f"{gone.get(leader, '?')} is no longer a contact")
            outcomes.append(RecordOutcome(Outcome.QUARANTINED, contacts_created=contacts_made, reason=reason))
            continue
        sightings.append((activity_id, ref))
        if leader != index or key in existing:
            seen.append(SeenRow(ref, Outcome.DUPLICATE, key, activity_id))
            outcomes.append(RecordOutcome(Outcome.DUPLICATE, activity_id, contacts_created=contacts_made))
            continue
        row, (deal_id, needs_review) = rows[index], placed[index]
        seen.append(SeenRow(ref, Outcome.LOGGED, key, activity_id))
        links.extend({"activity_id": activity_id, "contact_id": c} for c in linked[index])
        attachments.extend(_attachment_row(activity_id, item) for item in message.email.body.attachments)
        when = row["occurred_at"]
        for model, record_ids in (
            (Contact, linked[index]),
            (Company, [row["company_id"]]),
            (Deal, [deal_id]),
        ):
            for record_id in record_ids:
                if record_id is not None and (
                    record_id not in touched[model] or touched[model][record_id] < when
                ):
                    touched[model][record_id] = when
        outcomes.append(
            RecordOutcome(
                Outcome.LOGGED,
                activity_id=activity_id,
                contacts_created=contacts_made,
                companies_created=made.companies[index],
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
    bounced = {
        address: rows[i]["occurred_at"]
        for i in rows
        if messages[i].placement.bounce and outcomes[i].outcome == Outcome.LOGGED
        for address in messages[i].placement.link
    }
    if bounced:
        mark_bounced(session, bounced)
    # activity.logged for webhook subscribers, in this batch's transaction (nothing when nobody listens)
    announce_activities(
        session, [o.activity_id for o in outcomes if o.outcome is Outcome.LOGGED and o.activity_id], now=now
    )
    return Recorded(outcomes, made.found)


def record_sighting(
    session: Session, activity_id: int, ref: MessageRef, content_key: str, *, now: datetime
) -> None:
    """A message already logged from elsewhere, seen again in `ref`: list this mailbox on it."""
    add_sightings(session, [(activity_id, ref)], now=now)
    mark_seen(session, [SeenRow(ref, Outcome.DUPLICATE, content_key, activity_id)], now=now)


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
class _Made:
    found: dict[str, tuple[int, int | None]]  # address -> (contact id, company id): ours or a racing sync's
    contacts: Counter[int]  # message index -> contacts made for it
    companies: Counter[int]  # message index -> companies made for it


def _make_contacts(
    session: Session,
    messages: Sequence[EmailToRecord],
    fresh: Sequence[int],
    known: Mapping[str, tuple[int, int | None]],
    owner: User | None,
    now: datetime,
) -> _Made:
    """Make the contacts the batch's placements create (and the companies of their domains) with one INSERT
    per table. A contact joins the company owning the most specific of its address's domains; failing that
    a company is made for its registrable domain. Contacts made from outbound mail belong to the owner."""
    wanted: dict[str, tuple[NewContact, int | None, int]] = {}  # address -> (contact, owner id, message)
    for index in fresh:
        placement = messages[index].placement
        owner_id = owner.id if owner is not None and placement.direction == Direction.OUT else None
        for new in placement.create:
            if new.email not in known and new.email not in wanted:
                wanted[new.email] = (new, owner_id, index)
    if not wanted:
        return _Made({}, Counter(), Counter())
    domains = {
        address: lookup_domains(address.rpartition("@")[2], new.company_domain)
        for address, (new, _, _) in wanted.items()
        if new.company_domain
    }
    companies = company_ids_by_domain(session, {d for candidates in domains.values() for d in candidates})
    missing: dict[str, tuple[int | None, int]] = {}  # registrable domain -> (owner id, message index)
    for address, candidates in domains.items():
        if not any(d in companies for d in candidates):
            missing.setdefault(candidates[-1], wanted[address][1:])
    companies_made: Counter[int] = Counter()
    if missing:
        ordered = sorted(missing)
        made_companies = create_companies(
            session,
            [CompanyToCreate(company_name_from_domain(d), (d,), missing[d][0]) for d in ordered],
            now=now,
        )
        for domain, company_id in zip(ordered, made_companies.ids, strict=True):
            if company_id is None:
                companies[domain] = made_companies.taken[domain]  # a racing sync made it first
            else:
                companies[domain] = company_id
                companies_made[missing[domain][1]] += 1

    people = sorted(wanted)
    rows = [
        ContactToCreate(
            name=_clip(wanted[address][0].name, 300).strip() or display_name_from_email(address)[:300],
            emails=(address,),
            company_id=next((companies[d] for d in domains.get(address, ()) if d in companies), None),
            owner_id=wanted[address][1],
            lead_source="email",
        )
        for address in people
    ]
    made_contacts = create_contacts(session, rows, now=now)
    found: dict[str, tuple[int, int | None]] = {}
    contacts_made: Counter[int] = Counter()
    racing: list[str] = []
    for address, row, contact_id in zip(people, rows, made_contacts.ids, strict=True):
        if contact_id is None:
            racing.append(address)
        else:
            found[address] = (contact_id, row.company_id)
            contacts_made[wanted[address][2]] += 1
    if racing:
        # another sync made these contacts since our lookup: theirs stand, with their company
        found.update(contact_ids_by_email(session, racing))
    return _Made(found, contacts_made, companies_made)


def _addresses(placement: Placement) -> tuple[str, ...]:
    return (*placement.link, *(c.email for c in placement.create))


def _thread_ids(email: Email) -> tuple[str, ...]:
    return (*email.headers.in_reply_to, *email.headers.references)


# far above any real id: an activity of this batch sorts after every stored one with the same time
_BATCH_ID_BASE = 2**62


@dataclass
class _DealIndex:
    """Candidate open deals of a batch, loaded in three queries; messages then pick theirs in memory."""

    # thread message id -> (occurred_at, activity id, deal id, company id) of the latest email with a deal
    threads: dict[str, tuple[datetime, int, int, int | None]]
    by_contact: dict[int, set[tuple[int, int | None]]]  # contact id -> (deal id, company id)
    by_company: dict[int, set[int]]  # company id -> deal ids
    # loaded `as_of`: every deal, with when it was open (created, closed or None), for mail logged late
    windows: dict[int, tuple[datetime, datetime | None]] | None = None

    @classmethod
    def load(
        cls,
        session: Session,
        *,
        thread_ids: Iterable[str],
        contact_ids: Iterable[int],
        company_ids: Iterable[int],
        as_of: bool = False,
    ) -> _DealIndex:
        index = cls({}, {}, {})
        open_now = Deal.status == DealStatus.OPEN if not as_of else Deal.id.is_not(None)
        for chunk in chunked(sorted({t for t in thread_ids if t})):
            for message_id, occurred_at, activity_id, deal_id, company_id in session.execute(
                select(Activity.message_id, Activity.occurred_at, Activity.id, Deal.id, Deal.company_id)
                .join(Deal, Activity.deal_id == Deal.id)
                .where(Activity.message_id.in_(chunk), open_now)
            ):
                index._add(message_id, (occurred_at, activity_id, deal_id, company_id))
        for contact_chunk in chunked(sorted(set(contact_ids))):
            for contact_id, deal_id, company_id in session.execute(
                select(deal_contacts.c.contact_id, Deal.id, Deal.company_id)
                .join(Deal, deal_contacts.c.deal_id == Deal.id)
                .where(deal_contacts.c.contact_id.in_(contact_chunk), open_now)
            ):
                index.by_contact.setdefault(contact_id, set()).add((deal_id, company_id))
        for company_chunk in chunked(sorted(set(company_ids))):
            for deal_company_id, deal_id in session.execute(
                select(Deal.company_id, Deal.id).where(Deal.company_id.in_(company_chunk), open_now)
            ):
                if deal_company_id is not None:
                    index.by_company.setdefault(deal_company_id, set()).add(deal_id)
        if as_of:
            index.windows = {}
            ids = {e[2] for e in index.threads.values()} | {
                d for s in index.by_contact.values() for d, _ in s
            }
            ids |= {d for s in index.by_company.values() for d in s}
            for deal_chunk in chunked(sorted(ids)):
                for deal_id, created_at, closed_at in session.execute(
                    select(Deal.id, Deal.created_at, Deal.closed_at).where(Deal.id.in_(deal_chunk))
                ):
                    index.windows[deal_id] = (created_at, closed_at)
        return index

    def _open_at(self, deal_id: int, when: datetime | None) -> bool:
        if when is None or self.windows is None:
            return True
        window = self.windows.get(deal_id)
        if window is None:  # a deal this batch filed a thread on: it is the thread's own
            return True
        created_at, closed_at = window
        return created_at <= when and (closed_at is None or when <= closed_at)

    def choose(
        self, email: Email, contacts: Mapping[int, int | None], when: datetime | None = None
    ) -> tuple[int | None, int | None, bool]:
        """(deal id, its company id, needs review) for an email linked to `contacts` (contact id -> company).

        The thread decides first (a reply to mail already filed on an open deal); then the single open deal
        that includes one of the contacts; then the single open deal of their companies. Several candidates:
        no deal, and the activity is flagged for a person to pick. Won and lost deals get no mail by
        themselves: only open deals are loaded. With `when` (an index loaded as_of), the deals open at that
        moment are the candidates instead.
        """
        threads = [self.threads[t] for t in _thread_ids(email) if t in self.threads]
        thread = [entry for entry in threads if self._open_at(entry[2], when)]
        if thread:
            _, _, deal_id, company_id = max(thread, key=lambda entry: (entry[0], entry[1]))
            return deal_id, company_id, False
        by_contact = {
            deal for c in contacts for deal in self.by_contact.get(c, ()) if self._open_at(deal[0], when)
        }
        if len(by_contact) == 1:
            deal_id, company_id = next(iter(by_contact))
            return deal_id, company_id, False
        if by_contact:
            return None, None, True
        company_ids = {c for c in contacts.values() if c is not None}
        by_company = {
            (d, c) for c in company_ids for d in self.by_company.get(c, ()) if self._open_at(d, when)
        }
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


def _insert_activities(session: Session, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """content key -> new activity id; a key another sync logged meanwhile is left out (ON CONFLICT)."""
    if not rows:
        return {}
    stmt = (
        dialect_insert(session)(_ACTIVITIES)
        .on_conflict_do_nothing(index_elements=["content_key"])
        .returning(_ACTIVITIES.c.content_key, _ACTIVITIES.c.id)
    )
    ordered = sorted(rows, key=lambda row: str(row["content_key"]))  # the same lock order in racing syncs
    return {key: int(activity_id) for key, activity_id in session.execute(stmt, ordered)}


def _activity_row(
    email: Email,
    placement: Placement,
    *,
    key: str,
    occurred_at: datetime,
    author_id: int | None,
    company_id: int | None,
    deal_id: int | None,
    needs_review: bool,
    now: datetime,
) -> dict[str, Any]:
    headers, body = email.headers, email.body
    author = headers.author
    return {
        "kind": ActivityKind.EMAIL,
        "occurred_at": occurred_at,
        "subject": _clip(headers.subject, 998),
        "body": _clean(body.text),
        "author_id": author_id,
        "company_id": company_id,
        "deal_id": deal_id,
        "created_at": now,
        "message_id": _clip(headers.message_id, 998) if headers.message_id else None,
        "content_key": key,
        "thread_key": _clip(email.thread_key, 1000),
        "direction": placement.direction,
        "from_address": _clip(author.formatted(), 998) if author is not None else None,
        "to_addresses": [_clean(a.formatted()) for a in headers.to],
        "cc_addresses": [_clean(a.formatted()) for a in headers.cc],
        "body_html": _clean(body.html) if body.html is not None else None,
        "snippet": _clip(body.snippet, 400),
        "truncated": body.truncated or headers.truncated,
        "needs_deal_review": needs_review,
        "bounce": placement.bounce,
    }


def _attachment_row(activity_id: int, item: AttachmentData) -> dict[str, Any]:
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
    outbound = [i for i in indexes if messages[i].placement.direction == Direction.OUT]
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
    found: dict[str, int] = {}
    for chunk in chunked(sorted({k for k in keys if k})):
        rows = session.execute(
            select(Activity.content_key, Activity.id).where(Activity.content_key.in_(chunk))
        )
        found.update((key, activity_id) for key, activity_id in rows if key is not None)
    return found


def threads_on_open_deals(session: Session, message_ids: Iterable[str]) -> set[str]:
    """Which of these Message-IDs are emails filed on an open deal (a reply to one follows it)."""
    found: set[str] = set()
    for chunk in chunked(sorted({m[:998] for m in message_ids if m})):
        found.update(
            session.scalars(
                select(Activity.message_id)
                .join(Deal, Activity.deal_id == Deal.id)
                .where(Activity.message_id.in_(chunk), Deal.status == DealStatus.OPEN)
            )
        )
    return found


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
            "outcome": r.outcome.value,
            "activity_id": r.activity_id,
            "seen_at": now,
        }
        for r in rows
    ]
    stmt = dialect_insert(session)(_SEEN)
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
    stmt = dialect_insert(session)(_SIGHTINGS).on_conflict_do_nothing(
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
    mark_seen(session, [SeenRow(ref, Outcome.QUARANTINED)], now=now, replace=True)
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
    """Unresolved quarantined messages of a mailbox whose next retry is due (without loading raw bytes).

    A Core query: a poll with nothing new runs it, and must not pay for configuring the ORM's mappers."""
    q = _QUARANTINE.c
    rows = session.execute(
        select(q.folder, q.uidvalidity, q.uid, q.attempts, q.last_attempt_at, q.message_id, q.reason)
        .where(q.mailbox == mailbox, q.resolved_at.is_(None))
        .order_by(q.id)
    ).all()
    return [
        PendingQuarantine(MessageRef(mailbox, folder, uidvalidity, uid), attempts, message_id, reason)
        for folder, uidvalidity, uid, attempts, last_attempt_at, message_id, reason in rows
        if attempts < QUARANTINE_MAX_ATTEMPTS and last_attempt_at + quarantine_retry_delay(attempts) <= now
    ]


def quarantined_raw(session: Session, ref: MessageRef) -> bytes | None:
    row = _quarantine_row(session, ref)
    return row.raw if row is not None else None


# ---- internals ------------------------------------------------------------------------------------------


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
