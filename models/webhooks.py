"""Webhooks: subscriptions, the outbox of events, and the bookkeeping of their delivery.

- **Outbox in the same transaction.** Every session made by models.db.make_sessionmaker is watched
  (`watch_sessions`): the flushes of a transaction note each contact, deal or activity inserted, contact
  changed and deal moved to another stage; just before it commits, one event per record and type (with the
  record as it is then) and one delivery per subscription listening to that type are written by the same
  transaction. A rolled-back transaction leaves no event; a retried one writes its event once. Writes
  that bypass the ORM announce themselves (`announce_activities`, from the mail sync's bulk insert). With no
  subscription for a type nothing is written at all, so the sync pays one small query per flush that made
  something worth telling.
- **Delivery** (daemon/webhooks.py does the HTTP) is at least once: a delivery is claimed with a lease (its
  next attempt moved past the request's timeout), sent, then marked delivered; a daemon killed in between
  sends it again after the lease, with the same event id for receivers to dedupe on.
- **Signature**: `Threadline-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the
  timestamp (Unix seconds) in `Threadline-Timestamp`, as HubSpot and Stripe do: a receiver recomputes it and
  refuses old timestamps, so a captured request cannot be replayed later.
- **Retries**: backoff from 30 seconds doubling to an hour; a delivery still failing when its event is older
  than the retry period (`[api] webhook_retry_hours`, 24 h) pauses the subscription with the reason, shown in
  the panel; resuming sends what waited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, event, func, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from models.db import dialect_insert
from models.errors import DomainError
from models.representations import ActivityOut, ContactOut, DealOut, TaskOut
from models.schema import (
    Activity,
    Contact,
    ContactEmail,
    Deal,
    DealStageChange,
    DealStatus,
    Task,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from models.secrets import SecretBox, SecretKeyError, require_box
from settings.model import check_endpoint_url

EVENT_TYPES = (
    "contact.created",
    "contact.updated",
    "deal.created",
    "deal.stage_changed",
    "deal.won",
    "deal.lost",
    "activity.logged",
    "task.due",
)
SECRET_PREFIX = "whsec_"  # noqa: S105 (the marker of a signing secret, not one)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_RETRY = timedelta(hours=1)
TASK_DUE_WINDOW = timedelta(days=1)  # a task already overdue longer than this when webhooks start is not news

_SUBSCRIPTIONS: Table = WebhookSubscription.__table__  # type: ignore[assignment]
_EVENTS: Table = WebhookEvent.__table__  # type: ignore[assignment]
_DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[assignment]
_PENDING = "threadline_webhook_events"
_QUIET_COLUMNS = frozenset({"last_activity_at", "updated_at"})  # moved by new activity: not an update


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---- subscriptions -----------------------------------------------------------------------------------------


def check_events(events: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(e.strip() for e in events if e.strip()))
    unknown = [e for e in wanted if e not in EVENT_TYPES]
    if unknown or not wanted:
        raise DomainError(
            f"events must be some of {', '.join(EVENT_TYPES)}; got {', '.join(unknown) or 'none'}"
        )
    return wanted


def subscribe(
    session: Session, *, target_url: str, events: Iterable[str], box: SecretBox | None, now: datetime,
    by: Any = None,
) -> tuple[WebhookSubscription, str]:  # fmt: skip
    """A new subscription and its signing secret (shown once to whoever subscribed; stored encrypted)."""
    url = target_url.strip()
    problem = check_endpoint_url(url)
    if problem is not None:
        raise DomainError(problem.replace("secrets", "events"))
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    try:
        box = require_box(box, "store a webhook's signing secret")
    except SecretKeyError as exc:
        raise DomainError(str(exc)) from None
    subscription = WebhookSubscription(
        target_url=url, events=check_events(events), secret_encrypted=box.encrypt(secret), created_by=by,
        created_at=now,
    )  # fmt: skip
    session.add(subscription)
    session.flush()
    return subscription, secret


def signing_secret(subscription_secret_encrypted: str, box: SecretBox | None) -> str:
    return require_box(box, "sign webhooks").decrypt(subscription_secret_encrypted)


def resume(session: Session, subscription: WebhookSubscription, *, now: datetime) -> None:
    """Deliver again: what waited while the subscription was paused goes out at once."""
    subscription.paused_at = None
    subscription.paused_reason = None
    session.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.subscription_id == subscription.id, _DELIVERIES.c.delivered_at.is_(None))
        .values(next_attempt_at=now, attempts=0)
    )
    session.flush()


@dataclass(frozen=True)
class DeliveryCounts:
    """Webhook deliveries as operators count them (for /metrics and `threadline status`)."""

    delivered: int  # deliveries a receiver accepted
    failed_attempts: int  # attempts a receiver refused or never answered, delivered or not in the end
    waiting: int  # deliveries not accepted yet (due, or waiting for their next attempt)
    failing: int  # waiting, and the last attempt failed
    paused_subscriptions: int  # subscriptions paused after retrying for too long


def delivery_counts(session: Session) -> DeliveryCounts:
    undelivered = _DELIVERIES.c.delivered_at.is_(None)
    delivered, attempts, waiting, failing = session.execute(
        select(
            func.count(_DELIVERIES.c.delivered_at),
            func.coalesce(func.sum(_DELIVERIES.c.attempts), 0),
            func.count(_DELIVERIES.c.id).filter(undelivered),
            func.count(_DELIVERIES.c.id).filter(undelivered, _DELIVERIES.c.last_error.is_not(None)),
        )
    ).one()
    paused = session.scalar(
        select(func.count(_SUBSCRIPTIONS.c.id)).where(_SUBSCRIPTIONS.c.paused_at.is_not(None))
    )
    return DeliveryCounts(
        delivered=int(delivered),
        # each accepted delivery's last attempt succeeded; every other attempt failed
        failed_attempts=int(attempts) - int(delivered),
        waiting=int(waiting),
        failing=int(failing),
        paused_subscriptions=int(paused or 0),
    )


def pending_counts(session: Session) -> dict[int, int]:
    """Undelivered events per subscription id."""
    rows = session.execute(
        select(_DELIVERIES.c.subscription_id, func.count())
        .where(_DELIVERIES.c.delivered_at.is_(None))
        .group_by(_DELIVERIES.c.subscription_id)
    )
    return {int(s): int(n) for s, n in rows}


# ---- the outbox --------------------------------------------------------------------------------------------


def _listeners(session: Session, type_: str) -> list[int]:
    rows = session.execute(select(_SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.events))
    return [int(i) for i, events in rows if type_ in (events or ())]


def enqueue(
    session: Session, type_: str, payload: dict[str, Any], *, now: datetime, dedupe_key: str | None = None
) -> str | None:
    """Write an event and its deliveries in the session's transaction; its event id, or None when no
    subscription listens to this type (or the dedupe key was used already)."""
    listeners = _listeners(session, type_)
    if not listeners:
        return None
    event_id = str(uuid.uuid4())
    row = {
        "event_id": event_id,
        "type": type_,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "created_at": now,
    }
    statement = dialect_insert(session)(_EVENTS).values(row).returning(_EVENTS.c.id)
    if dedupe_key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
    inserted = session.execute(statement).scalar()
    if inserted is None:
        return None
    session.execute(
        _DELIVERIES.insert(),
        [
            {
                "event_id": inserted,
                "subscription_id": s,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for s in listeners
        ],
    )
    return event_id


def _payload(type_: str, record: Any) -> dict[str, Any]:
    if type_.startswith("contact."):
        return dict(ContactOut().dump(record))
    if type_.startswith("deal."):
        return dict(DealOut().dump(record))
    if type_.startswith("task."):
        return dict(TaskOut().dump(record))
    return dict(ActivityOut().dump(record))  # email text never travels in an event


def announce_activities(session: Session, activity_ids: Sequence[int], *, now: datetime) -> int:
    """activity.logged for activities inserted without the ORM (the mail sync's bulk insert)."""
    if not activity_ids or not _listeners(session, "activity.logged"):
        return 0
    activities = session.scalars(select(Activity).where(Activity.id.in_(list(activity_ids)))).all()
    return sum(
        enqueue(session, "activity.logged", _payload("activity.logged", a), now=now) is not None
        for a in activities
    )


def enqueue_due_tasks(session: Session, *, now: datetime) -> int:
    """task.due, once per task and due time, for open tasks that fell due within the last day."""
    if not _listeners(session, "task.due"):
        return 0
    due = session.scalars(
        select(Task).where(Task.done_at.is_(None), Task.due_at <= now, Task.due_at > now - TASK_DUE_WINDOW)
    ).all()
    made = 0
    for task in due:
        assert task.due_at is not None
        key = f"task.due:{task.id}:{int(task.due_at.timestamp())}"
        made += enqueue(session, "task.due", _payload("task.due", task), now=now, dedupe_key=key) is not None
    return made


def _changed(record: Any) -> bool:
    state = inspect(record)
    return any(
        attr.key not in _QUIET_COLUMNS and attr.history.has_changes()
        for attr in state.attrs
        if attr.key in state.mapper.columns
    )


def _after_flush(session: Session, _context: Any) -> None:
    pending: list[tuple[str, Any]] = session.info.setdefault(_PENDING, [])
    for record in session.new:
        if isinstance(record, Contact):
            pending.append(("contact.created", record))
        elif isinstance(record, Deal):
            pending.append(("deal.created", record))
        elif isinstance(record, Activity):
            pending.append(("activity.logged", record))
        elif isinstance(record, DealStageChange) and record.from_stage_id is not None:
            deal = record.deal
            pending.append(("deal.stage_changed", deal))
            if deal.status == DealStatus.WON:
                pending.append(("deal.won", deal))
            elif deal.status == DealStatus.LOST:
                pending.append(("deal.lost", deal))
        elif isinstance(record, ContactEmail) and record.contact not in session.new:
            pending.append(("contact.updated", record.contact))
    for record in session.dirty:
        if isinstance(record, Contact) and _changed(record):
            pending.append(("contact.updated", record))


def _before_commit(session: Session) -> None:
    if not session.info.get(_PENDING):
        return
    session.flush()  # the records' final state (a flush here may add to the pending list)
    pending = session.info.pop(_PENDING, None) or []
    created = {id(r) for t, r in pending if t == "contact.created"}
    seen: set[tuple[str, int]] = set()
    with session.no_autoflush:
        now = utcnow()
        for type_, record in pending:
            if (type_, id(record)) in seen or (type_ == "contact.updated" and id(record) in created):
                continue
            seen.add((type_, id(record)))
            enqueue(session, type_, _payload(type_, record), now=now)


def _forget(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)


def watch_sessions(factory: sessionmaker[Session]) -> None:
    """Write the outbox from every session this factory makes (see the module docstring)."""
    event.listen(factory, "after_flush", _after_flush)
    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_soft_rollback", _forget)


# ---- delivery bookkeeping ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueDelivery:
    id: int
    subscription_id: int
    target_url: str
    secret_encrypted: str
    event_id: str
    type: str
    payload: dict[str, Any]
    event_created_at: datetime
    attempts: int


def event_body(delivery: DueDelivery) -> bytes:
    """What a receiver gets: {"id", "type", "created_at", "data"} as compact JSON."""
    body = {
        "id": delivery.event_id,
        "type": delivery.type,
        "created_at": delivery.event_created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Threadline-Signature header's value for this body at this time."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def claim_due(session: Session, *, now: datetime, limit: int, lease: timedelta) -> list[DueDelivery]:
    """Up to `limit` deliveries due now, of subscriptions not paused, oldest first; each is leased (its next
    attempt moved to now + lease) so another daemon does not send it meanwhile."""
    query = (
        select(_DELIVERIES.c.id)
        .join(_SUBSCRIPTIONS, _SUBSCRIPTIONS.c.id == _DELIVERIES.c.subscription_id)
        .where(
            _DELIVERIES.c.delivered_at.is_(None),
            _DELIVERIES.c.next_attempt_at <= now,
            _SUBSCRIPTIONS.c.paused_at.is_(None),
        )
        .order_by(_DELIVERIES.c.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=_DELIVERIES, skip_locked=True)
    ids = [int(i) for i in session.scalars(query)]
    if not ids:
        return []
    session.execute(update(_DELIVERIES).where(_DELIVERIES.c.id.in_(ids)).values(next_attempt_at=now + lease))
    rows = session.execute(
        select(
            _DELIVERIES.c.id,
            _DELIVERIES.c.subscription_id,
            _SUBSCRIPTIONS.c.target_url,
            _SUBSCRIPTIONS.c.secret_encrypted,
            _EVENTS.c.event_id,
            _EVENTS.c.type,
            _EVENTS.c.payload,
            _EVENTS.c.created_at,
            _DELIVERIES.c.attempts,
        )
        .join(_SUBSCRIPTIONS, _SUBSCRIPTIONS.c.id == _DELIVERIES.c.subscription_id)
        .join(_EVENTS, _EVENTS.c.id == _DELIVERIES.c.event_id)
        .where(_DELIVERIES.c.id.in_(ids))
        .order_by(_DELIVERIES.c.id)
    )
    return [DueDelivery(*row) for row in rows]


def retry_delay(attempts: int) -> timedelta:
    delay: timedelta = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)
    return delay


def record_delivered(session: Session, delivery_ids: Sequence[int], *, now: datetime) -> None:
    if delivery_ids:
        session.execute(
            update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_(list(delivery_ids)))
            .values(delivered_at=now, attempts=_DELIVERIES.c.attempts + 1, last_error=None)
        )


def record_failed(
    session: Session, delivery: DueDelivery, error: str, *, now: datetime, retry_for: timedelta
) -> bool:
    """Count a failed attempt and plan the next; True when it paused the subscription (retried too long)."""
    attempts = delivery.attempts + 1
    session.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.id == delivery.id)
        .values(attempts=attempts, last_error=error[:2000], next_attempt_at=now + retry_delay(attempts))
    )
    if now - delivery.event_created_at < retry_for:
        return False
    hours = int(retry_for.total_seconds() // 3600)
    reason = f"Paused {now:%Y-%m-%d %H:%M} UTC: deliveries failed for {hours} h. Last error: {error[:500]}"
    session.execute(
        update(_SUBSCRIPTIONS)
        .where(_SUBSCRIPTIONS.c.id == delivery.subscription_id, _SUBSCRIPTIONS.c.paused_at.is_(None))
        .values(paused_at=now, paused_reason=reason)
    )
    return True
