"""Deciding alert notifications exactly once, and recording whether they were sent.

`decide_notifications` records one `Notification` per alert with an idempotency key, in the caller's
transaction, in one statement per rule: `INSERT INTO notifications SELECT ... FROM <rule> ON CONFLICT (key) DO
NOTHING RETURNING ...` (SQLite and PostgreSQL both speak it). The rule's SELECT comes from models.rules, so
the decision and the rule cannot disagree; nothing is fetched into Python but the new notifications, which
keeps a daily scan over 100,000 open deals well under two seconds.

The key says which alert this is: `stalled:<deal id>:<stall start>:p<period>`, `task:<task id>:<due
time>:p<period>`, `lead:<contact id>:p<period>`. The stall start is max(stage_entered_at, last_activity_at),
so a deal that moved or had activity and stalled again is a new stall with new keys. An alert is decided when
no notification of the same stall/due time/lead was created in the last `remind_every_days`; so the first
alert comes at once, then one reminder every `remind_every_days`. The period (`now` // remind_every_days) in
the key makes two scans deciding the same reminder at the same time collide on the unique key: only one row
is recorded, whichever process commits first.

Sending is the daemon's business; this module gives it the unsent notifications per user and records the
outcome (`mark_sent`, `mark_failed`) in short transactions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from models.activities import create_task
from models.rules import (
    StallRule,
    first_email_of_contact,
    last_touch_expr,
    overdue_select,
    stalled_select,
    waiting_leads_select,
    wants_alerts,
)
from models.schema import Contact, Deal, Notification, Role, Stage, Task, User
from models.sql import json_object, stamp_text
from models.types import UTCDateTime
from settings import AlertSettings

KIND_STALLED_DEAL = "stalled_deal"
KIND_OVERDUE_TASK = "overdue_task"
KIND_WAITING_LEAD = "waiting_lead"
KIND_RECONNECT_NEEDED = "reconnect_needed"
KINDS = (KIND_STALLED_DEAL, KIND_OVERDUE_TASK, KIND_WAITING_LEAD, KIND_RECONNECT_NEEDED)

_MAX_ERROR_LENGTH = 2000
_COLUMNS = (
    "key",
    "kind",
    "user_id",
    "deal_id",
    "task_id",
    "contact_id",
    "title",
    "detail",
    "created_at",
    "sent_at",
    "send_attempts",
    "last_error",
    "read_at",
)


@dataclass(frozen=True)
class AlertPolicy:
    """The [alerts] settings the rules and the decision need (models never read the config itself)."""

    stall_days: int
    lead_window_days: int
    lead_response_hours: int
    remind_every_days: int
    create_tasks: bool

    @classmethod
    def of(cls, alerts: AlertSettings) -> AlertPolicy:
        return cls(
            stall_days=alerts.stall_days,
            lead_window_days=alerts.lead_window_days,
            lead_response_hours=alerts.lead_response_hours,
            remind_every_days=alerts.remind_every_days,
            create_tasks=alerts.create_tasks,
        )


@dataclass(frozen=True)
class Decision:
    """One notification this decision recorded."""

    id: int
    key: str
    kind: str
    user_id: int
    deal_id: int | None


@dataclass
class DecideResult:
    decided: list[Decision] = field(default_factory=list)
    tasks_created: int = 0


@dataclass(frozen=True)
class Recipient:
    user_id: int
    email: str
    name: str


@dataclass(frozen=True)
class PendingNotification:
    """An unsent notification as the digest needs it."""

    id: int
    key: str
    kind: str
    title: str
    detail: dict[str, Any]
    deal_id: int | None
    task_id: int | None
    contact_id: int | None
    created_at: datetime
    send_attempts: int

    @property
    def subject_key(self) -> tuple[str, int | str | None]:
        """What the alert is about: two unsent alerts about the same thing appear once in a digest."""
        if self.kind == KIND_RECONNECT_NEEDED:
            return self.kind, str(self.detail.get("mailbox"))
        return self.kind, self.deal_id or self.task_id or self.contact_id


# ---- deciding ---------------------------------------------------------------------------------------------


def _text(value: str) -> ColumnElement[str]:
    return literal(value, String)


def _name(value: str) -> ColumnElement[str]:
    # inline, not a bind parameter: PostgreSQL cannot infer a parameter's type inside json_build_object
    assert value.isidentifier()
    return literal_column(f"'{value}'", String)


def _title(value: ColumnElement[str]) -> ColumnElement[str]:
    return func.substr(value, 1, 500)


def _id_text(column: Any) -> ColumnElement[str]:
    return cast(column, String)


def parse_stamp(value: object) -> datetime | None:
    """A timestamp stored in a notification's detail (either database's JSON form) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _not_recently_notified(
    session: Session, kind: str, link: Any, record_id: Any, prefix: ColumnElement[str], since: datetime
) -> ColumnElement[bool]:
    recent = (
        select(Notification.id).where(Notification.kind == kind, Notification.created_at > since).limit(1)
    )
    if session.scalar(recent) is None:
        # Nothing recent to compare with (first scan, or after a quiet week): no anti-join at all. On a
        # table PostgreSQL still believes empty, the planner picks a nested loop that rescans the rows the
        # INSERT itself is adding: quadratic, minutes for 80,000 first alerts.
        return true()
    earlier = aliased(Notification)
    return ~exists().where(
        getattr(earlier, link) == record_id,
        earlier.kind == kind,
        earlier.created_at > since,
        earlier.key.like(prefix + _text("%")),
    )


def _insert_from(session: Session, query: Any) -> list[Decision]:
    """INSERT the rule's rows, skipping keys that exist; returns what was inserted."""
    table: Table = Notification.__table__  # type: ignore[assignment]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).from_select(_COLUMNS, query)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).from_select(_COLUMNS, query)
    else:  # pragma: no cover - Threadline supports the two databases above
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(
        table.c.id, table.c.key, table.c.kind, table.c.user_id, table.c.deal_id
    )
    return [Decision(*row) for row in session.execute(stmt)]


def decide_notifications(session: Session, *, now: datetime, policy: AlertPolicy) -> DecideResult:
    """Run the rules and record each alert that is due, once; call inside the transaction that commits them.

    With `policy.create_tasks`, the first alert of each stall also gets a follow-up task on the deal for its
    owner, created in the same transaction (so it exists exactly when the notification does).
    """
    every = timedelta(days=policy.remind_every_days)
    since = now - every
    period = _text(f"p{int(now.timestamp()) // int(every.total_seconds())}")
    at_now = literal(now, UTCDateTime())
    common = (at_now, null(), literal(0, Integer), null(), null())  # created_at .. read_at
    result = DecideResult()

    rule = StallRule.load(session, now=now, default_stall_days=policy.stall_days)
    start = last_touch_expr()
    prefix = _text("stalled:") + _id_text(Deal.id) + _text(":") + stamp_text(start) + _text(":")
    stalled = stalled_select(
        rule,
        prefix + period,
        _text(KIND_STALLED_DEAL),
        Deal.owner_id,
        Deal.id,
        null(),
        null(),
        _title(_text("Stalled deal: ") + Deal.title),
        json_object(
            _name("deal_title"),
            Deal.title,
            _name("stage"),
            Stage.name,
            _name("stall_days"),
            rule.stall_days_expr(),
            _name("last_touch_at"),
            start,
            _name("last_activity_at"),
            Deal.last_activity_at,
            _name("value_cents"),
            cast(Deal.value, BigInteger),
            _name("currency"),
            Deal.currency,
        ),
        *common,
        alertable_only=True,
    ).where(_not_recently_notified(session, KIND_STALLED_DEAL, "deal_id", Deal.id, prefix, since))
    result.decided += _insert_from(session, stalled)

    prefix = _text("task:") + _id_text(Task.id) + _text(":") + stamp_text(Task.due_at) + _text(":")
    overdue = overdue_select(
        prefix + period,
        _text(KIND_OVERDUE_TASK),
        Task.assignee_id,
        Task.deal_id,
        Task.id,
        Task.contact_id,
        _title(_text("Task overdue: ") + Task.title),
        json_object(
            _name("task_title"),
            Task.title,
            _name("due_at"),
            Task.due_at,
            _name("deal_title"),
            Deal.title,
            _name("contact_name"),
            Contact.name,
        ),
        *common,
        now=now,
        alertable_only=True,
    ).where(_not_recently_notified(session, KIND_OVERDUE_TASK, "task_id", Task.id, prefix, since))
    result.decided += _insert_from(session, overdue)

    prefix = _text("lead:") + _id_text(Contact.id) + _text(":")
    leads = waiting_leads_select(
        prefix + period,
        _text(KIND_WAITING_LEAD),
        Contact.owner_id,
        null(),
        null(),
        Contact.id,
        _title(_text("New lead waiting for a first contact: ") + Contact.name),
        json_object(
            _name("contact_name"),
            Contact.name,
            _name("email"),
            first_email_of_contact(),
            _name("created_at"),
            Contact.created_at,
        ),
        *common,
        now=now,
        window=timedelta(days=policy.lead_window_days),
        response=timedelta(hours=policy.lead_response_hours),
        alertable_only=True,
    ).where(_not_recently_notified(session, KIND_WAITING_LEAD, "contact_id", Contact.id, prefix, since))
    result.decided += _insert_from(session, leads)

    if policy.create_tasks:
        result.tasks_created = _create_follow_up_tasks(session, result.decided, now=now)
    session.flush()
    return result


def _create_follow_up_tasks(session: Session, decided: Iterable[Decision], *, now: datetime) -> int:
    created = 0
    for decision in decided:
        if decision.kind != KIND_STALLED_DEAL or decision.deal_id is None:
            continue
        stall_prefix = decision.key.rsplit(":", 1)[0] + ":"
        earlier = session.scalar(
            select(func.count(Notification.id)).where(
                Notification.deal_id == decision.deal_id,
                Notification.key.like(stall_prefix + "%"),
                Notification.id != decision.id,
            )
        )
        if earlier:  # a reminder: the stall already got its task
            continue
        deal = session.get(Deal, decision.deal_id)
        if deal is None:
            continue
        create_task(
            session,
            title=f"Follow up on stalled deal: {deal.title}"[:500],
            now=now,
            due_at=now,
            assignee=session.get(User, decision.user_id),
            deal=deal,
            notes="No stage change or activity for too long: call, write or move the deal.",
        )
        created += 1
    return created


def notify_reconnect_needed(
    session: Session, mailbox: str, *, owner_id: int | None, since: datetime, reason: str, now: datetime
) -> int:
    """Tell the mailbox's owner and every active admin, once per refusal, that it must be connected again
    (in the panel, and in their next digest). The key names the mailbox and the time of the refusal, so
    marking the same refusal again records nothing. Returns how many notifications were recorded."""
    users = select(User.id).where(User.active.is_(True), User.role == Role.ADMIN)
    user_ids = set(session.scalars(users))
    if owner_id is not None:
        user_ids.add(owner_id)
    table: Table = Notification.__table__  # type: ignore[assignment]
    stamp = since.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
    recorded = 0
    for user_id in sorted(user_ids):
        key = f"reconnect:{mailbox}:{stamp}:u{user_id}"[:300]
        if session.scalar(select(Notification.id).where(Notification.key == key)) is not None:
            continue
        session.execute(
            table.insert().values(
                key=key,
                kind=KIND_RECONNECT_NEEDED,
                user_id=user_id,
                title=f"Mailbox {mailbox} needs reconnecting"[:500],
                detail={"mailbox": mailbox, "reason": reason[:500], "since": since.isoformat()},
                created_at=now,
                send_attempts=0,
            )
        )
        recorded += 1
    return recorded


def recipients_with_unsent(session: Session) -> list[Recipient]:
    """Users who have unsent notifications and still want alerts."""
    rows = session.execute(
        select(User.id, User.email, User.name)
        .where(
            User.id.in_(select(Notification.user_id).where(Notification.sent_at.is_(None)).distinct()),
            wants_alerts(),
        )
        .order_by(User.id)
    ).all()
    return [Recipient(user_id=i, email=e, name=n) for i, e, n in rows]


def claim_unsent(session: Session, user_id: int) -> list[PendingNotification]:
    """A user's unsent notifications, oldest first (the scan lock makes this run's claim exclusive)."""
    rows = session.scalars(
        select(Notification)
        .where(Notification.user_id == user_id, Notification.sent_at.is_(None))
        .order_by(Notification.created_at, Notification.id)
    ).all()
    return [
        PendingNotification(
            id=n.id,
            key=n.key,
            kind=n.kind,
            title=n.title,
            detail=dict(n.detail or {}),
            deal_id=n.deal_id,
            task_id=n.task_id,
            contact_id=n.contact_id,
            created_at=n.created_at,
            send_attempts=n.send_attempts,
        )
        for n in rows
    ]


def mark_sent(session: Session, ids: Iterable[int], *, now: datetime) -> int:
    """Record that these notifications went out; ones already marked are left alone."""
    return _attempted(session, ids, sent_at=now, last_error=None)


def mark_failed(session: Session, ids: Iterable[int], *, error: str) -> int:
    """Keep these notifications unsent, with the reason shown in the admin panel; the next run retries."""
    return _attempted(session, ids, last_error=error[:_MAX_ERROR_LENGTH])


def _attempted(session: Session, ids: Iterable[int], **outcome: Any) -> int:
    """Count a sending attempt on the still unsent notifications among `ids`, with its outcome."""
    id_list = sorted(set(ids))
    if not id_list:
        return 0
    result = session.execute(
        update(Notification)
        .where(Notification.id.in_(id_list), Notification.sent_at.is_(None))
        .values(**outcome, send_attempts=Notification.send_attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def count_unsent(session: Session) -> int:
    return int(session.scalar(select(func.count()).where(Notification.sent_at.is_(None))) or 0)


def unread_count(session: Session, user_id: int) -> int:
    """How many of the user's notifications they have not read yet."""
    return int(
        session.scalar(
            select(func.count(Notification.id)).where(
                Notification.user_id == user_id, Notification.read_at.is_(None)
            )
        )
        or 0
    )


def mark_read(session: Session, user: User, *, now: datetime, notification_id: int | None = None) -> int:
    """Mark the user's unread notifications read (only one, given its id); returns how many changed."""
    where = [Notification.user_id == user.id, Notification.read_at.is_(None)]
    if notification_id is not None:
        where.append(Notification.id == notification_id)
    result = session.execute(update(Notification).where(*where).values(read_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]
