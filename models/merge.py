"""Merging two contacts, or two companies, into one: the preview of what moves and the merge itself.

`plan_merge` says what a merge of OTHER into KEEP would move (addresses, domains, emails, notes, other
activities, deals, tasks, notifications, contacts) and which fields empty on KEEP it would fill from OTHER.
`merge_records` carries it out in the caller's transaction: every row that points at OTHER is pointed at
KEEP, the empty fields are filled, OTHER is deleted, a `MergedRecord` keeps its old id leading to KEEP
(`kept_id_of`, followed by the record pages), and an activity of kind "merge" records it on KEEP's timeline.

What points at a record is read from the schema's foreign keys, so a table added later moves with it too.
A row that would collide with one KEEP already has (both contacts on the same deal or the same email) is
dropped: KEEP already has it, so nothing is lost and nothing doubles.

Merging while the sync runs: the merge takes an exclusive lock (PostgreSQL: an advisory transaction lock;
SQLite: the database's write lock, BEGIN IMMEDIATE) and then locks both rows in id order (SELECT ... FOR
UPDATE). The sync looks its contacts up in an earlier transaction; when it writes, `resolve_merged` takes the
same advisory lock shared (so no merge can run between that moment and its commit) and replaces the ids of
records merged since with the ids of the records kept. A merge therefore waits for the batches being written
and the next batches wait for it; each email ends up linked to the kept record, once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Table,
    UniqueConstraint,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from models.contacts import find_company_by_domain, find_contact_by_email, request_relink
from models.db import chunked
from models.errors import DomainError, NotFoundError
from models.schema import (
    Activity,
    ActivityKind,
    Base,
    Company,
    Contact,
    Deal,
    MergedRecord,
    Notification,
    Task,
    User,
    activity_contacts,
)

# one number for the advisory lock every merge takes exclusively and every sync write shares
MERGE_LOCK_KEY = 0x7468_6D65_7267  # "thmerg"


class MergeKind(enum.StrEnum):
    CONTACT = "contact"
    COMPANY = "company"

    @property
    def model(self) -> type[Contact] | type[Company]:
        return Contact if self is MergeKind.CONTACT else Company

    @property
    def plural(self) -> str:
        return "contacts" if self is MergeKind.CONTACT else "companies"


# fields a merge fills on KEEP when they are empty there (in this order on the preview)
FILLED_FIELDS: dict[MergeKind, tuple[str, ...]] = {
    MergeKind.CONTACT: ("name", "title", "phone", "company_id", "owner_id", "lead_source"),
    MergeKind.COMPANY: ("name", "owner_id"),
}
_FIELD_LABELS = {"company_id": "company", "owner_id": "owner", "lead_source": "lead source"}
# how rows of each referring table are called on the preview
_ROW_LABELS = {
    "contact_emails": "addresses",
    "company_domains": "domains",
    "deal_contacts": "deals",
    "deals": "deals",
    "tasks": "tasks",
    "notifications": "notifications",
    "contacts": "contacts",
}


@dataclass(frozen=True)
class Move:
    """One kind of row that moves to KEEP: its label on the preview and how many."""

    label: str
    count: int


@dataclass(frozen=True)
class Fill:
    """A field empty on KEEP that the merge fills from OTHER."""

    field: str
    label: str
    value: str


@dataclass(frozen=True)
class MergePlan:
    kind: MergeKind
    keep_id: int
    other_id: int
    keep_name: str
    other_name: str
    moves: tuple[Move, ...]
    fills: tuple[Fill, ...]

    def summary(self) -> str:
        """'3 addresses, 12 emails, 1 deal; fills phone, title' (only what is not zero)."""
        moved = ", ".join(
            f"{m.count} {_singular(m.label) if m.count == 1 else m.label}" for m in self.moves if m.count
        )
        filled = ", ".join(f.label for f in self.fills)
        parts = [moved or "nothing to move"]
        if filled:
            parts.append(f"fills {filled}")
        return "; ".join(parts)


@dataclass(frozen=True)
class MergeResult:
    plan: MergePlan
    activity_id: int
    added_keys: tuple[str, ...]  # the addresses or domains KEEP gained (for relinking and webhooks)


def _singular(label: str) -> str:
    irregular = {"addresses": "address", "activities": "activity", "companies": "company"}
    if label in irregular:
        return irregular[label]
    for plural, single in irregular.items():
        if label.endswith(" " + plural):
            return label[: -len(plural)] + single
    return label[:-1] if label.endswith("s") else label


# ---- finding the records -----------------------------------------------------------------------------------


def find_record(session: Session, kind: MergeKind, ref: str) -> Contact | Company:
    """A contact by id or email address, a company by id or domain; NotFoundError saying what is missing
    (and, for an id merged earlier, which record it became)."""
    ref = ref.strip()
    record: Contact | Company | None
    if ref.isdigit():
        record = session.get(kind.model, int(ref))  # type: ignore[assignment]
        if record is None:
            kept = kept_id_of(session, kind, int(ref))
            if kept is not None:
                raise NotFoundError(f"{kind.value} {ref} was merged into {kind.value} {kept}")
            raise NotFoundError(f"no {kind.value} with id {ref}")
        return record
    if kind is MergeKind.CONTACT:
        record = find_contact_by_email(session, ref)
        if record is None:
            raise NotFoundError(f"no contact has the address {ref!r}")
        return record
    record = find_company_by_domain(session, ref)
    if record is None:
        raise NotFoundError(f"no company has the domain {ref!r}")
    return record


def kept_id_of(session: Session, kind: MergeKind, record_id: int) -> int | None:
    """The id of the record this (merged, deleted) one became, or None if it was never merged."""
    return session.scalar(
        select(MergedRecord.kept_id).where(
            MergedRecord.kind == kind.value, MergedRecord.merged_id == record_id
        )
    )


# ---- what points at a record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    table: Table
    column: Column[Any]
    peers: tuple[Column[Any], ...]  # the other columns of a unique key this column is part of, if any


def _references(kind: MergeKind) -> list[_Reference]:
    """Every column of the schema that points at this kind of record, in table order."""
    target: Table = kind.model.__table__  # type: ignore[assignment]
    found: list[_Reference] = []
    for table in Base.metadata.sorted_tables:
        for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
            if fk.column.table is not target or fk.parent.table is target:
                continue
            column = fk.parent
            peers: tuple[Column[Any], ...] = ()
            for key in _unique_keys(table):
                names = [c.name for c in key]
                if column.name in names and len(names) > 1:
                    peers = tuple(c for c in key if c.name != column.name)
                    break
                if names == [column.name]:
                    peers = ()
                    break
            found.append(_Reference(table, column, peers))
    return found


def _unique_keys(table: Table) -> list[list[Column[Any]]]:
    keys = [list(table.primary_key.columns)]
    keys.extend(list(c.columns) for c in table.constraints if isinstance(c, UniqueConstraint))
    return keys


def _unique_alone(ref: _Reference) -> bool:
    """Whether the column is unique by itself (one row per record at most)."""
    return any([c.name for c in key] == [ref.column.name] for key in _unique_keys(ref.table))


# ---- the preview -------------------------------------------------------------------------------------------


def plan_merge(
    session: Session, kind: MergeKind, keep: Contact | Company, other: Contact | Company
) -> MergePlan:
    """What merging `other` into `keep` would move and fill (nothing is changed)."""
    if keep.id == other.id:
        raise DomainError(f"choose two different {kind.plural}")
    counts: dict[str, int] = {}
    activities = _activity_counts(session, kind, other.id)
    counts.update(activities)
    for ref in _references(kind):
        if ref.table.name in ("activity_contacts", "activities"):
            continue  # counted by kind above
        label = _ROW_LABELS.get(ref.table.name, ref.table.name.replace("_", " "))
        n = int(
            session.scalar(select(func.count()).select_from(ref.table).where(ref.column == other.id)) or 0
        )
        counts[label] = counts.get(label, 0) + n
    if kind is MergeKind.COMPANY:
        # tasks and notifications belong to deals and contacts: they come along with them
        deals = select(Deal.id).where(Deal.company_id == other.id)
        contacts = select(Contact.id).where(Contact.company_id == other.id)
        counts["tasks"] = int(
            session.scalar(
                select(func.count()).where(
                    or_(Task.company_id == other.id, Task.deal_id.in_(deals), Task.contact_id.in_(contacts))
                )
            )
            or 0
        )
        counts["notifications"] = int(
            session.scalar(
                select(func.count()).where(
                    or_(Notification.deal_id.in_(deals), Notification.contact_id.in_(contacts))
                )
            )
            or 0
        )
    order = ["addresses", "domains", "contacts", "emails", "notes", "other activities", "deals", "tasks",
             "notifications"]  # fmt: skip
    labels = [label for label in order if label in counts] + sorted(set(counts) - set(order))
    moves = tuple(Move(label, counts[label]) for label in labels)
    return MergePlan(
        kind, keep.id, other.id, str(keep), str(other), moves, _fills(session, kind, keep, other)
    )


def _activity_counts(session: Session, kind: MergeKind, other_id: int) -> dict[str, int]:
    if kind is MergeKind.CONTACT:
        ids = select(activity_contacts.c.activity_id).where(activity_contacts.c.contact_id == other_id)
        where: ColumnElement[bool] = Activity.id.in_(ids)
    else:
        where = Activity.company_id == other_id
    counts = {"emails": 0, "notes": 0, "other activities": 0}
    for activity_kind, n in session.execute(
        select(Activity.kind, func.count()).where(where).group_by(Activity.kind)
    ):
        label = {ActivityKind.EMAIL: "emails", ActivityKind.NOTE: "notes"}.get(
            ActivityKind(activity_kind), "other activities"
        )
        counts[label] += int(n)
    return counts


def _fills(session: Session, kind: MergeKind, keep: Any, other: Any) -> tuple[Fill, ...]:
    fills: list[Fill] = []
    for name in FILLED_FIELDS[kind]:
        mine, theirs = getattr(keep, name), getattr(other, name)
        if _empty(mine) and not _empty(theirs):
            fills.append(Fill(name, _FIELD_LABELS.get(name, name), _shown(session, name, theirs)))
    return tuple(fills)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _shown(session: Session, name: str, value: Any) -> str:
    if name == "company_id":
        company = session.get(Company, value)
        return company.name if company is not None else str(value)
    if name == "owner_id":
        user = session.get(User, value)
        return user.name if user is not None else str(value)
    return str(value)


# ---- the merge ---------------------------------------------------------------------------------------------


def lock_for_merge(session: Session, kind: MergeKind, ids: tuple[int, int]) -> list[Contact | Company]:
    """Hold off the sync's writes and other merges, then lock both records in id order; the records found."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MERGE_LOCK_KEY})
    model = kind.model
    rows = session.scalars(
        select(model)
        .where(model.id.in_(sorted(set(ids))))
        .order_by(model.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return list(rows)  # type: ignore[arg-type]


def merge_records(
    session: Session,
    kind: MergeKind,
    keep_id: int,
    other_id: int,
    *,
    now: datetime,
    by: User | None = None,
) -> MergeResult:
    """Merge record `other_id` into `keep_id` in the caller's transaction (which commits it)."""
    if keep_id == other_id:
        raise DomainError(f"choose two different {kind.plural}")
    found = {r.id: r for r in lock_for_merge(session, kind, (keep_id, other_id))}
    for record_id in (keep_id, other_id):
        if record_id not in found:
            kept = kept_id_of(session, kind, record_id)
            if kept is not None:
                raise NotFoundError(f"{kind.value} {record_id} was merged into {kind.value} {kept} already")
            raise NotFoundError(f"no {kind.value} with id {record_id}")
    keep, other = found[keep_id], found[other_id]
    plan = plan_merge(session, kind, keep, other)
    added = _keys_of(other)
    other_name = str(other)[:300]

    table: Table = kind.model.__table__  # type: ignore[assignment]
    values: dict[str, Any] = {f.field: getattr(other, f.field) for f in plan.fills}
    if other.last_activity_at is not None and (
        keep.last_activity_at is None or keep.last_activity_at < other.last_activity_at
    ):
        values["last_activity_at"] = other.last_activity_at
    session.flush()
    session.expunge(other)  # written with statements below; its loaded collections must not cascade
    if values:
        session.execute(update(table).where(table.c.id == keep_id).values(values))
    for ref in _references(kind):
        _move(session, ref, keep_id, other_id)
    session.execute(delete(table).where(table.c.id == other_id))

    records: Table = MergedRecord.__table__  # type: ignore[assignment]
    session.execute(
        update(records)
        .where(records.c.kind == kind.value, records.c.kept_id == other_id)
        .values(kept_id=keep_id)
    )
    session.execute(
        insert(records).values(
            kind=kind.value,
            merged_id=other_id,
            kept_id=keep_id,
            merged_name=other_name,
            merged_at=now,
            merged_by_id=by.id if by is not None else None,
        )
    )
    session.expire(keep)
    activity = _record_on_timeline(session, plan, keep, now=now, by=by)
    # KEEP gained addresses or domains: its earlier skipped mail is looked at again, like any other gain
    if kind is MergeKind.CONTACT:
        request_relink(session, addresses=added, now=now)
    else:
        request_relink(session, domains=added, now=now)
    return MergeResult(plan, activity.id, added)


def _keys_of(record: Contact | Company) -> tuple[str, ...]:
    if isinstance(record, Contact):
        return tuple(e.email for e in record.emails)
    return tuple(d.domain for d in record.domains)


def _move(session: Session, ref: _Reference, keep_id: int, other_id: int) -> None:
    """Point ref's rows at KEEP; a row that would collide with one KEEP has already is dropped."""
    table, column = ref.table, ref.column
    if not ref.peers and not _unique_alone(ref):
        session.execute(update(table).where(column == other_id).values({column.name: keep_id}))
        return
    twin = table.alias("twin")
    collides = exists().where(
        twin.c[column.name] == keep_id, *(twin.c[p.name] == table.c[p.name] for p in ref.peers)
    )
    session.execute(update(table).where(column == other_id, ~collides).values({column.name: keep_id}))
    session.execute(delete(table).where(column == other_id))


def _record_on_timeline(
    session: Session, plan: MergePlan, keep: Contact | Company, *, now: datetime, by: User | None
) -> Activity:
    who = f"by {by.name}" if by is not None else "from the command line"
    subject = f"Merged {plan.kind.value} {plan.other_name} (#{plan.other_id}) into this {plan.kind.value}"
    summary = f"Merged {who}: {plan.summary()}."
    activity = Activity(
        kind=ActivityKind.MERGE,
        occurred_at=now,
        subject=subject[:998],
        body=summary,
        snippet=summary[:400],
        # no author: the merge is not a rep's sales activity (the dashboard counts those); the text says who
        author_id=None,
        company_id=keep.id if plan.kind is MergeKind.COMPANY else None,
        created_at=now,
        truncated=False,
        needs_deal_review=False,
    )
    session.add(activity)
    session.flush()
    if plan.kind is MergeKind.CONTACT:
        session.execute(insert(activity_contacts).values(activity_id=activity.id, contact_id=keep.id))
    return activity


# ---- for the sync: ids of records merged since they were looked up -----------------------------------------


def resolve_merged(
    session: Session, known: Mapping[str, tuple[int, int | None]]
) -> dict[str, tuple[int, int | None]]:
    """The sync's address -> (contact id, company id) lookup, with merged contacts and companies replaced by
    the ones kept. Holds merges off until the caller's transaction ends (PostgreSQL; on SQLite the write lock
    does), so the ids returned stay valid until it commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": MERGE_LOCK_KEY})
    if not known:
        return dict(known)
    contact_ids = sorted({c for c, _ in known.values()})
    company_ids = sorted({co for _, co in known.values() if co is not None})
    contacts: dict[int, int] = {}
    companies: dict[int, int] = {}
    for kind, ids, into in (
        (MergeKind.CONTACT, contact_ids, contacts),
        (MergeKind.COMPANY, company_ids, companies),
    ):
        for chunk in chunked(ids):
            rows = session.execute(
                select(MergedRecord.merged_id, MergedRecord.kept_id).where(
                    MergedRecord.kind == kind.value, MergedRecord.merged_id.in_(chunk)
                )
            )
            into.update((merged, kept) for merged, kept in rows)
    if not contacts and not companies:
        return dict(known)
    kept_company: dict[int, int | None] = {}
    for chunk in chunked(sorted(set(contacts.values()))):
        rows = session.execute(select(Contact.id, Contact.company_id).where(Contact.id.in_(chunk)))
        kept_company.update((contact_id, company_id) for contact_id, company_id in rows)
    resolved: dict[str, tuple[int, int | None]] = {}
    for address, (contact_id, company_id) in known.items():
        if contact_id in contacts:
            contact_id = contacts[contact_id]
            company_id = kept_company.get(contact_id)
        if company_id is not None:
            company_id = companies.get(company_id, company_id)
        resolved[address] = (contact_id, company_id)
    return resolved
