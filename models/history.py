"""The index of the mail the sync skipped, and what it takes to link it later.

With `create_contacts = "sent"` or `"none"` most mail with people who are not contacts yet is skipped. So that
it can be logged once they become contacts, the sync keeps a compact index of every skipped message that had
an outside participant (`index_skipped`, in the batch's transaction): its folder (a reference to the folder's
sync state, which names the mailbox), UIDVALIDITY, UID, content key, date and outside addresses, stored once
each (`history_addresses`) and referenced per message (`history_participants`). No body, no subject, no
display name. Rows older than `[matching] history_days` are pruned (`prune_history`).

An address is indexed in its base form (`models.contacts.base_address`: 'pat+news@x' as 'pat@x'), so the
history of a contact is found whichever sub-address the mail used.

Relinking reads the queue that models.contacts fills (`RelinkRequest`: an address a contact gained, a domain
a company gained) or an explicit selection (`HistorySelection`: a contact, a company, a date), finds the
indexed messages (`find_history`), and daemon.relink fetches them again by UID and runs them through the
sync's pipeline. Settling a message happens in the transaction that records it (`settle_history`): a logged
or duplicate message leaves the index, one the server no longer has is marked `gone`, one still skipped
stays. So a kill at any instant leaves each message either untouched (done again next time) or settled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from models.contacts import add_contact_email, base_address, normalize_email, request_relink
from models.db import chunked, dialect_insert
from models.errors import DomainError
from models.messages import Direction
from models.schema import (
    Activity,
    CompanyDomain,
    Contact,
    ContactEmail,
    FolderSyncState,
    HistoryAddress,
    HistoryMessage,
    RelinkRequest,
    activity_contacts,
    deal_contacts,
    history_participants,
)

_ADDRESSES: Table = HistoryAddress.__table__  # type: ignore[assignment]
_MESSAGES: Table = HistoryMessage.__table__  # type: ignore[assignment]
_REQUESTS: Table = RelinkRequest.__table__  # type: ignore[assignment]
_FOLDERS: Table = FolderSyncState.__table__  # type: ignore[assignment]
_PARTICIPANTS = history_participants


@dataclass(frozen=True)
class Skipped:
    """One skipped message of a folder for the index."""

    uid: int
    content_key: str | None
    sent_at: datetime
    addresses: tuple[str, ...]  # outside participants, normalized


@dataclass(frozen=True)
class IndexedMessage:
    """A message of the index to fetch again."""

    id: int
    mailbox: str
    folder: str
    uidvalidity: int
    uid: int
    content_key: str | None
    sent_at: datetime


@dataclass(frozen=True)
class HistorySelection:
    """Which skipped mail to look at: mail with these addresses or with addresses at these domains (or their
    subdomains), optionally since a date."""

    addresses: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    since: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.addresses or self.domains)


# ---- writing the index (the sync) -------------------------------------------------------------------------


def index_skipped(
    session: Session, mailbox: str, folder: str, uidvalidity: int, messages: Sequence[Skipped]
) -> None:
    """Add a batch's skipped messages to the index (a fixed number of statements per batch); a message
    already indexed is left alone."""
    messages = [m for m in messages if m.addresses]
    if not messages:
        return
    folder_id = session.scalar(
        select(_FOLDERS.c.id).where(_FOLDERS.c.mailbox == mailbox, _FOLDERS.c.folder == folder)
    )
    if folder_id is None:
        return
    address_ids = _address_ids(session, {base_address(a) for m in messages for a in m.addresses})
    insert = dialect_insert(session)(_MESSAGES).on_conflict_do_nothing(
        index_elements=["folder_id", "uidvalidity", "uid"]
    )
    rows = [
        {
            "folder_id": folder_id,
            "uidvalidity": uidvalidity,
            "uid": m.uid,
            "content_key": m.content_key[:1000] if m.content_key else None,
            "sent_at": m.sent_at,
            "gone": False,
        }
        for m in sorted(messages, key=lambda m: m.uid)
    ]
    by_uid = {m.uid: m for m in messages}
    ids = {uid: i for uid, i in session.execute(insert.returning(_MESSAGES.c.uid, _MESSAGES.c.id), rows)}
    links = sorted(
        {
            (address_ids[base_address(a)], message_id)
            for uid, message_id in ids.items()
            for a in by_uid[uid].addresses
        }
    )
    if links:
        session.execute(_PARTICIPANTS.insert(), [{"address_id": a, "message_id": m} for a, m in links])


def _address_ids(session: Session, addresses: set[str]) -> dict[str, int]:
    found = _lookup_addresses(session, addresses)
    missing = sorted(addresses - found.keys())
    if missing:
        insert = dialect_insert(session)(_ADDRESSES).on_conflict_do_nothing(index_elements=["address"])
        session.execute(insert, [{"address": a, "domain": a.rpartition("@")[2]} for a in missing])
        found.update(_lookup_addresses(session, set(missing)))
    return found


def _lookup_addresses(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in chunked(sorted(addresses)):
        rows = session.execute(
            select(_ADDRESSES.c.address, _ADDRESSES.c.id).where(_ADDRESSES.c.address.in_(chunk))
        )
        found.update((address, i) for address, i in rows)
    return found


def prune_history(session: Session, *, now: datetime, days: int) -> int:
    """Forget skipped messages older than `days` (and addresses no message uses any more); how many."""
    cutoff = now - timedelta(days=days)
    old = select(_MESSAGES.c.id).where(_MESSAGES.c.sent_at < cutoff)
    session.execute(delete(_PARTICIPANTS).where(_PARTICIPANTS.c.message_id.in_(old)))
    result = session.execute(delete(_MESSAGES).where(_MESSAGES.c.sent_at < cutoff))
    removed = int(getattr(result, "rowcount", 0) or 0)
    if removed:
        used = select(_PARTICIPANTS.c.address_id)
        session.execute(delete(_ADDRESSES).where(_ADDRESSES.c.id.not_in(used)))
    return int(removed)


# ---- finding what to fetch again -----------------------------------------------------------------------


def pending_requests(session: Session) -> tuple[list[int], HistorySelection]:
    """The queued relink requests: their ids (to delete once done) and what they select together."""
    rows = session.execute(
        select(_REQUESTS.c.id, _REQUESTS.c.address, _REQUESTS.c.domain).order_by(_REQUESTS.c.id)
    ).all()
    addresses = tuple(sorted({a for _, a, _ in rows if a}))
    domains = tuple(sorted({d for _, _, d in rows if d}))
    return [i for i, _, _ in rows], HistorySelection(addresses, domains)


def forget_requests(session: Session, ids: Sequence[int]) -> None:
    for chunk in chunked(sorted(ids)):
        session.execute(delete(_REQUESTS).where(_REQUESTS.c.id.in_(chunk)))


def selection_for_contacts(
    session: Session, contact_ids: Iterable[int], *, since: datetime | None = None
) -> HistorySelection:
    addresses: set[str] = set()
    for chunk in chunked(sorted(set(contact_ids))):
        addresses.update(
            session.scalars(select(ContactEmail.email).where(ContactEmail.contact_id.in_(chunk)))
        )
    return HistorySelection(tuple(sorted(addresses)), (), since)


def selection_for_companies(
    session: Session, company_ids: Iterable[int], *, since: datetime | None = None
) -> HistorySelection:
    """A company's history: its contacts' addresses and its domains."""
    ids = sorted(set(company_ids))
    addresses: set[str] = set()
    domains: set[str] = set()
    for chunk in chunked(ids):
        addresses.update(
            session.scalars(select(ContactEmail.email).join(Contact).where(Contact.company_id.in_(chunk)))
        )
        domains.update(
            session.scalars(select(CompanyDomain.domain).where(CompanyDomain.company_id.in_(chunk)))
        )
    return HistorySelection(tuple(sorted(addresses)), tuple(sorted(domains)), since)


def everything_selection(session: Session, *, since: datetime | None = None) -> HistorySelection:
    """Every contact's addresses and every company's domains."""
    addresses = tuple(sorted(session.scalars(select(ContactEmail.email))))
    domains = tuple(sorted(session.scalars(select(CompanyDomain.domain))))
    return HistorySelection(addresses, domains, since)


def ask_for_history(session: Session, selection: HistorySelection, *, now: datetime) -> int:
    """ "Find earlier emails": how many skipped messages the index holds for this selection; they are queued
    to be fetched again (daemon.relink) in the caller's transaction."""
    found = len(find_history(session, selection))
    if found:
        request_relink(session, addresses=selection.addresses, domains=selection.domains, now=now)
    return found


def find_history(session: Session, selection: HistorySelection) -> list[IndexedMessage]:
    """The indexed messages (not gone) with one of the selection's addresses or domains, oldest first."""
    address_ids: set[int] = set()
    wanted = {base_address(a) for a in selection.addresses}
    address_ids.update(_lookup_addresses(session, wanted).values())
    for domain in sorted(set(selection.domains)):
        address_ids.update(
            session.scalars(
                select(_ADDRESSES.c.id).where(
                    or_(_ADDRESSES.c.domain == domain, _ADDRESSES.c.domain.like("%." + _escape(domain), "\\"))
                )
            )
        )
    message_ids: set[int] = set()
    for chunk in chunked(sorted(address_ids)):
        message_ids.update(
            session.scalars(select(_PARTICIPANTS.c.message_id).where(_PARTICIPANTS.c.address_id.in_(chunk)))
        )
    found: list[IndexedMessage] = []
    m, f = _MESSAGES.c, _FOLDERS.c
    for chunk in chunked(sorted(message_ids)):
        query = (
            select(m.id, f.mailbox, f.folder, m.uidvalidity, m.uid, m.content_key, m.sent_at)
            .join(_FOLDERS, f.id == m.folder_id)
            .where(m.id.in_(chunk), m.gone.is_(False))
        )
        if selection.since is not None:
            query = query.where(m.sent_at >= selection.since)
        found.extend(IndexedMessage(*row) for row in session.execute(query))
    return sorted(found, key=lambda x: (x.mailbox, x.folder, x.uidvalidity, x.uid))


def indexed_by_content_key(
    session: Session, mailbox: str, folder: str, uidvalidity: int, keys: Iterable[str]
) -> dict[str, tuple[int, int]]:
    """content key -> (UID, index row id) of the messages of this folder generation the index holds."""
    m, f = _MESSAGES.c, _FOLDERS.c
    found: dict[str, tuple[int, int]] = {}
    for chunk in chunked(sorted({k for k in keys if k})):
        found.update(
            (key, (uid, row_id))
            for key, uid, row_id in session.execute(
                select(m.content_key, m.uid, m.id)
                .join(_FOLDERS, f.id == m.folder_id)
                .where(f.mailbox == mailbox, f.folder == folder, m.uidvalidity == uidvalidity)
                .where(m.content_key.in_(chunk))
            )
        )
    return found


# ---- settling (in the transaction that records the messages) ----------------------------------------


def settle_history(session: Session, *, done: Iterable[int] = (), gone: Iterable[int] = ()) -> None:
    """Index rows (by id) whose message is now logged (`done`: removed from the index) or no longer on the
    server (`gone`: kept, marked)."""
    for chunk in chunked(sorted(set(done))):
        session.execute(delete(_PARTICIPANTS).where(_PARTICIPANTS.c.message_id.in_(chunk)))
        session.execute(delete(_MESSAGES).where(_MESSAGES.c.id.in_(chunk)))
    for chunk in chunked(sorted(set(gone))):
        session.execute(update(_MESSAGES).where(_MESSAGES.c.id.in_(chunk)).values(gone=True))


def history_counts(session: Session) -> tuple[int, int]:
    """(messages indexed, of which the server no longer has)."""
    total = session.scalar(select(func.count()).select_from(_MESSAGES)) or 0
    gone = session.scalar(select(func.count()).select_from(_MESSAGES).where(_MESSAGES.c.gone.is_(True))) or 0
    return int(total), int(gone)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ---- a reply from an address nobody knows, filed on its thread's deal ----------------------------------


@dataclass(frozen=True)
class AddressOffer:
    """An address that replied into a deal's thread without being anyone's: offered as another address of
    the contacts the thread was with (`contact_ids`, best first)."""

    address: str
    activity_ids: tuple[int, ...]
    contact_ids: tuple[int, ...]


def address_offers(session: Session, deal_id: int) -> list[AddressOffer]:
    """The deal's inbound emails linked to no contact whose sender is nobody's address yet."""
    orphans = session.execute(
        select(Activity.id, Activity.from_address, Activity.thread_key)
        .where(Activity.deal_id == deal_id, Activity.direction == Direction.IN)
        .where(~Activity.id.in_(select(activity_contacts.c.activity_id)))
        .order_by(Activity.occurred_at)
    ).all()
    by_address: dict[str, tuple[list[int], list[str]]] = {}
    for activity_id, from_address, thread_key in orphans:
        address = normalize_email(_address_of(from_address or ""))
        if address is not None:
            ids, threads = by_address.setdefault(address, ([], []))
            ids.append(activity_id)
            threads.append(thread_key or "")
    if not by_address:
        return []
    taken = set(session.scalars(select(ContactEmail.email).where(ContactEmail.email.in_(sorted(by_address)))))
    deal_contacts_ids = list(
        session.scalars(select(deal_contacts.c.contact_id).where(deal_contacts.c.deal_id == deal_id))
    )
    offers: list[AddressOffer] = []
    for address, (ids, threads) in sorted(by_address.items()):
        if address in taken:
            continue
        in_thread = list(
            session.scalars(
                select(activity_contacts.c.contact_id)
                .join(Activity, Activity.id == activity_contacts.c.activity_id)
                .where(Activity.deal_id == deal_id, Activity.thread_key.in_(sorted(set(threads))))
                .distinct()
            )
        )
        candidates = tuple(dict.fromkeys([*sorted(in_thread), *deal_contacts_ids]))
        if candidates:
            offers.append(AddressOffer(address, tuple(ids), candidates))
    return offers


def adopt_address(session: Session, contact: Contact, address: str, *, deal_id: int) -> int:
    """Give the contact an address that replied into the deal's thread: the deal's emails from it are
    linked to the contact now, and the rest of its mail is queued for relinking (models.contacts). Returns
    how many of the deal's emails were linked; DomainError when the address is someone else's."""
    offer = next((o for o in address_offers(session, deal_id) if o.address == normalize_email(address)), None)
    if offer is None or contact.id not in offer.contact_ids:
        raise DomainError(f"{address} is not waiting to be added to {contact}")
    if not add_contact_email(session, contact, offer.address):
        raise DomainError(f"{offer.address} already belongs to another contact")
    session.execute(
        activity_contacts.insert(), [{"activity_id": i, "contact_id": contact.id} for i in offer.activity_ids]
    )
    return len(offer.activity_ids)


def _address_of(formatted: str) -> str:
    """'Pat <pat@x.example>' -> 'pat@x.example' (the form Activity.from_address is stored in)."""
    text = formatted.strip()
    if text.endswith(">") and "<" in text:
        return text[text.rindex("<") + 1 : -1]
    return text
