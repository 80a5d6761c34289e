"""What the database knows about Threadline's health: each mailbox's sync and the alert digests' delivery.

The sync records its progress (folder cursors, per-mailbox status and backoff, quarantine) and the alerts
record what was sent; this module reads those rows into plain values and owns the one rule for "is this
mailbox in trouble" (`MailboxState`), so `threadline status`, the panel's `/metrics` and any later monitor
agree. Everything is computed from the database at the time of asking, so any process (a panel on another
machine, a second panel behind a load balancer) reports the same numbers; nothing is kept in memory.

A mailbox is judged against what should be syncing: the config file's [[mailboxes]] the caller passes
(`ExpectedMailbox`: a name and a poll interval) and the mailboxes managed in the database (a paused one is
`paused`, not a problem). A mailbox the sync knows but neither lists (removed, or configured only on another
machine) is reported as `unconfigured` and never counts as a problem either.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from models.db import dialect_insert
from models.leases import DaemonView, read_holders
from models.notifications import KINDS
from models.schema import (
    Activity,
    FolderSyncState,
    Mailbox,
    MailboxStatus,
    Notification,
    QuarantinedMessage,
)
from models.webhooks import DeliveryCounts, delivery_counts
from settings import MailboxSettings

# A healthy mailbox records a success at least every poll (or every minute while idle, see daemon.sync): no
# success for three polls, and never less than this floor, means nothing is syncing it.
STALE_FLOOR = timedelta(minutes=15)
STALE_POLLS = 3


class MailboxState(enum.StrEnum):
    OK = "ok"
    FAILING = "failing"  # the last attempt failed; the daemon retries after a backoff
    STALE = "stale"  # no successful sync for longer than `stale_after`: no daemon is syncing it
    NEVER = "never synced"  # configured, but no sync has completed a folder yet
    PAUSED = "paused"  # a database mailbox someone paused: not synced on purpose
    UNCONFIGURED = "unconfigured"  # the sync knows it, but no configuration lists it any more

    @property
    def is_problem(self) -> bool:
        return self in (MailboxState.FAILING, MailboxState.STALE, MailboxState.NEVER)


@dataclass(frozen=True)
class ExpectedMailbox:
    """A mailbox the configuration says should be syncing, and how often it polls."""

    name: str
    poll_seconds: int = 60


def expected_mailboxes(mailboxes: Iterable[MailboxSettings]) -> list[ExpectedMailbox]:
    return [ExpectedMailbox(m.name, m.poll_seconds) for m in mailboxes]


def stale_after(poll_seconds: int) -> timedelta:
    return max(STALE_FLOOR, timedelta(seconds=STALE_POLLS * poll_seconds))


@dataclass(frozen=True)
class MailboxHealth:
    name: str
    state: MailboxState
    last_success_at: datetime | None  # the last committed folder batch or completed pass
    last_attempt_at: datetime | None
    last_error: str | None  # the last failed attempt's reason, while it is failing
    last_error_at: datetime | None
    consecutive_failures: int
    next_attempt_at: datetime | None  # set while backing off after failures
    messages_seen: int
    messages_logged: int
    quarantined: int  # messages set aside and not resolved yet
    last_pass_seconds: float | None = None  # the daemon's last pass that fetched mail took this long
    last_pass_messages: int | None = None  # and fetched this many messages
    holder: DaemonView | None = None  # the live daemon syncing it now (models.leases)
    idle_connected: bool = False  # its holder's IDLE connection is up (new mail arrives at once)
    # messages the server held above the sync cursor of the mailbox's folders at their last poll: found but
    # not yet handled (a backlog, or a poll that stopped between batches); 0 once a poll handled them all
    messages_waiting: int = 0

    def seconds_since_success(self, now: datetime) -> float | None:
        if self.last_success_at is None:
            return None
        return max(0.0, (now - self.last_success_at).total_seconds())

    def backoff_seconds(self, now: datetime) -> float:
        """Seconds until the next attempt while backing off; 0 when it is not waiting."""
        if self.next_attempt_at is None:
            return 0.0
        return max(0.0, (self.next_attempt_at - now).total_seconds())


@dataclass(frozen=True)
class AlertKindCounts:
    kind: str
    decided: int  # every alert ever decided
    sent: int  # emailed in a digest
    unsent: int  # waiting for the next digest
    failing: int  # unsent, and the last attempt to email it failed


@dataclass(frozen=True)
class AlertDelivery:
    kinds: tuple[AlertKindCounts, ...]
    digests_sent: int  # one digest is the alerts one owner received in one email
    recipients_failing: int  # owners whose digest could not be sent on the last attempt


@dataclass(frozen=True)
class HealthSnapshot:
    taken_at: datetime
    mailboxes: tuple[MailboxHealth, ...]
    alerts: AlertDelivery
    emails_needing_review: int  # emails waiting for someone to choose their deal
    webhooks: DeliveryCounts  # webhook deliveries: sent, failed attempts, waiting, paused subscriptions
    daemons: tuple[DaemonView, ...] = ()  # every daemon the database knows, alive ones first

    @property
    def problems(self) -> tuple[MailboxHealth, ...]:
        return tuple(m for m in self.mailboxes if m.state.is_problem)


def take_snapshot(session: Session, expected: Sequence[ExpectedMailbox], *, now: datetime) -> HealthSnapshot:
    """Everything the database knows about Threadline's health, in a handful of aggregate queries."""
    mailboxes = mailbox_health(session, expected, now=now)
    holders = read_holders(session, [m.name for m in mailboxes], now=now)
    idle = {
        name: d for name, d in session.execute(select(MailboxStatus.mailbox, MailboxStatus.idle_daemon_id))
    }
    return HealthSnapshot(
        taken_at=now,
        daemons=holders.daemons,
        mailboxes=tuple(
            replace(
                m,
                holder=holders.holder(m.name),
                idle_connected=_idle_up(idle.get(m.name), holders.mailboxes.get(m.name)),
            )
            for m in mailboxes
        ),
        alerts=alert_delivery(session),
        webhooks=delivery_counts(session),
        emails_needing_review=int(
            session.scalar(select(func.count(Activity.id)).where(Activity.needs_deal_review.is_(True))) or 0
        ),
    )


def _idle_up(claimed_by: int | None, holder: int | None) -> bool:
    """IDLE is up when the daemon that last said it connected one still holds the mailbox."""
    return claimed_by is not None and claimed_by == holder


def mailbox_health(
    session: Session, expected: Sequence[ExpectedMailbox], *, now: datetime
) -> list[MailboxHealth]:
    """The config file's mailboxes in their order, then the database's, then any others the sync knows."""
    statuses = {row.mailbox: row for row in session.scalars(select(MailboxStatus))}
    folders = {
        row.mailbox: row
        for row in session.execute(
            select(
                FolderSyncState.mailbox,
                func.coalesce(func.sum(FolderSyncState.messages_seen), 0).label("seen"),
                func.coalesce(func.sum(FolderSyncState.messages_logged), 0).label("logged"),
                func.coalesce(func.sum(FolderSyncState.messages_waiting), 0).label("waiting"),
                func.max(FolderSyncState.last_success_at).label("last_success_at"),
            ).group_by(FolderSyncState.mailbox)
        )
    }
    quarantined = {
        mailbox: int(count)
        for mailbox, count in session.execute(
            select(QuarantinedMessage.mailbox, func.count(QuarantinedMessage.id))
            .where(QuarantinedMessage.resolved_at.is_(None))
            .group_by(QuarantinedMessage.mailbox)
        )
    }
    polls: dict[str, int | None] = {m.name: m.poll_seconds for m in expected}
    for name, poll_seconds, paused_at in session.execute(
        select(Mailbox.name, Mailbox.poll_seconds, Mailbox.paused_at)
        .where(Mailbox.removed_at.is_(None))
        .order_by(Mailbox.name)
    ):
        # the config file's mailbox of the same name wins, as it does for the daemon
        polls.setdefault(name, None if paused_at is not None else int(poll_seconds))
    paused = {name for name, poll in polls.items() if poll is None}
    others = sorted((set(statuses) | set(folders) | set(quarantined)) - set(polls))
    result = []
    for name in [*polls, *others]:
        status, folder = statuses.get(name), folders.get(name)
        successes = [
            t
            for t in (status.last_success_at if status else None, folder.last_success_at if folder else None)
            if t is not None
        ]
        last_success = max(successes) if successes else None
        failures = (status.consecutive_failures or 0) if status else 0
        state = (
            MailboxState.PAUSED if name in paused else _state(polls.get(name), failures, last_success, now)
        )
        result.append(
            MailboxHealth(
                name=name,
                state=state,
                last_success_at=last_success,
                last_attempt_at=status.last_attempt_at if status else None,
                last_error=status.last_error if status and failures else None,
                last_error_at=status.last_error_at if status else None,
                consecutive_failures=failures,
                next_attempt_at=status.next_attempt_at if status else None,
                messages_seen=int(folder.seen) if folder else 0,
                messages_logged=int(folder.logged) if folder else 0,
                messages_waiting=int(folder.waiting) if folder else 0,
                quarantined=int(quarantined.get(name, 0)),
                last_pass_seconds=status.last_pass_seconds if status else None,
                last_pass_messages=status.last_pass_messages if status else None,
            )
        )
    return result


def _state(
    poll_seconds: int | None, failures: int, last_success: datetime | None, now: datetime
) -> MailboxState:
    if poll_seconds is None:
        return MailboxState.UNCONFIGURED
    if failures:
        return MailboxState.FAILING
    if last_success is None:
        return MailboxState.NEVER
    if now - last_success > stale_after(poll_seconds):
        return MailboxState.STALE
    return MailboxState.OK


def alert_delivery(session: Session) -> AlertDelivery:
    unsent = Notification.sent_at.is_(None)
    rows = {
        kind: (decided, sent, waiting, failing)
        for kind, decided, sent, waiting, failing in session.execute(
            select(
                Notification.kind,
                func.count(Notification.id),
                func.count(Notification.sent_at),
                func.count(Notification.id).filter(unsent),
                func.count(Notification.id).filter(unsent, Notification.last_error.is_not(None)),
            ).group_by(Notification.kind)
        )
    }
    kinds = [*KINDS, *sorted(set(rows) - set(KINDS))]
    # the digest to one owner marks all its alerts sent at the same instant
    digests = (
        select(Notification.user_id, Notification.sent_at).where(Notification.sent_at.is_not(None)).distinct()
    )
    return AlertDelivery(
        kinds=tuple(AlertKindCounts(kind, *map(int, rows.get(kind, (0, 0, 0, 0)))) for kind in kinds),
        digests_sent=int(session.scalar(select(func.count()).select_from(digests.subquery())) or 0),
        recipients_failing=int(
            session.scalar(
                select(func.count(distinct(Notification.user_id))).where(
                    unsent, Notification.last_error.is_not(None)
                )
            )
            or 0
        ),
    )


def record_pass(session: Session, mailbox: str, *, seconds: float, messages: int) -> None:
    """The daemon's pass over `mailbox` fetched `messages` in `seconds` (for /metrics and status)."""
    values = {"last_pass_seconds": seconds, "last_pass_messages": messages}
    insert = dialect_insert(session)(MailboxStatus).values(mailbox=mailbox, consecutive_failures=0, **values)
    session.execute(insert.on_conflict_do_update(index_elements=["mailbox"], set_=values))
