"""Who holds what: the identity of every lease, each daemon's heartbeat row, and reading holders back.

A lease is the right to do one thing that must be done by one process at a time: sync a mailbox (and hold
its IDLE), or run a singleton job (the alert scan, webhook delivery, history relinking). daemon.leases takes
and gives them back; this module owns what they are called and how anyone (the daemon, `threadline status`,
the panel's `/metrics`) finds out who holds them, so they all agree.

PostgreSQL: a lease is a session-level advisory lock on the 64-bit key `lease_key(kind, name)`, held by the
holder daemon's dedicated lease connection. The server is the only truth: `pg_locks` lists every granted
advisory lock with the backend holding it, and a daemon's row in `daemons` names the backend of its lease
connection (`backend_pid`). A daemon is alive exactly while its own presence lock (`LeaseKind.DAEMON`, its
row id) is granted; a daemon that dies or loses its connection loses every lock at once, so nothing here
depends on clocks or heartbeat ages. The heartbeat is for people: when a daemon last reported, and what it
held then.

SQLite: one daemon at most (daemon.leases refuses a second with an exclusive lock file), so the live daemon
holds every lease; alive means it has not stopped and its heartbeat is recent (`SQLITE_ALIVE_FOR`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session

from models.db import dialect_insert
from models.schema import DaemonProcess, MailboxStatus

# A SQLite daemon heartbeats every few seconds; a row this old belongs to one that was killed.
SQLITE_ALIVE_FOR = timedelta(seconds=30)
# Rows of daemons stopped (or dead) this long ago are removed when a daemon starts.
FORGET_AFTER = timedelta(days=7)


class LeaseKind(enum.StrEnum):
    MAILBOX = "mailbox"  # syncing one mailbox and holding its IDLE
    JOB = "job"  # being the daemon that runs a singleton job, for as long as it lives
    RUN = "run"  # one run of a singleton job, for commands run by hand (`--once`) as well as daemons
    DAEMON = "daemon"  # a daemon's presence: held by its lease connection while it lives


def lease_key(kind: LeaseKind, name: str | int) -> int:
    """The advisory lock key of a lease: 64 bits of BLAKE2b, so distinct names never share a lock in
    practice (a collision among a million names has a chance of about 3e-8)."""
    digest = hashlib.blake2b(f"threadline:{kind.value}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def granted_locks(session: Session) -> dict[int, int]:
    """PostgreSQL: each advisory lock on a 64-bit key granted in this database -> the backend holding it."""
    rows = session.execute(
        text(
            "SELECT classid::bigint, objid::bigint, pid FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )
    locks = {}
    for high, low, pid in rows:
        unsigned = (int(high) << 32) | int(low)
        locks[unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned] = int(pid)
    return locks


@dataclass(frozen=True)
class DaemonView:
    """A daemon as `threadline status` and `/metrics` show it."""

    id: int
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool
    mailboxes_held: int
    jobs: tuple[str, ...]

    @property
    def label(self) -> str:
        """How a daemon is named to people: which machine and process, and its row (`host:pid#id`)."""
        return f"{self.host}:{self.pid}#{self.id}"

    def seconds_since_heartbeat(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat_at).total_seconds())


@dataclass(frozen=True)
class Holders:
    """Who holds each mailbox lease, read in one go: daemons by id, and each mailbox's holder (or None)."""

    daemons: tuple[DaemonView, ...]
    mailboxes: Mapping[str, int | None]

    def holder(self, mailbox: str) -> DaemonView | None:
        daemon_id = self.mailboxes.get(mailbox)
        return next((d for d in self.daemons if d.id == daemon_id), None)

    @property
    def alive(self) -> tuple[DaemonView, ...]:
        return tuple(d for d in self.daemons if d.alive)


def read_holders(session: Session, mailboxes: Iterable[str], *, now: datetime) -> Holders:
    """Every daemon the database knows (alive first), and the holder of each named mailbox."""
    rows = list(session.scalars(select(DaemonProcess).order_by(DaemonProcess.id)))
    names = list(dict.fromkeys(mailboxes))
    if session.get_bind().dialect.name == "postgresql":
        locks = granted_locks(session)
        alive: dict[int, int | None] = {
            row.id: row.backend_pid
            for row in rows
            if row.backend_pid is not None
            and locks.get(lease_key(LeaseKind.DAEMON, row.id)) == row.backend_pid
        }
        by_backend = {pid: daemon_id for daemon_id, pid in alive.items() if pid is not None}
        held = {name: by_backend.get(locks.get(lease_key(LeaseKind.MAILBOX, name), -1)) for name in names}
        counts = {daemon_id: sum(1 for h in held.values() if h == daemon_id) for daemon_id in alive}
    else:
        alive_ids = [
            row.id for row in rows if row.stopped_at is None and now - row.heartbeat_at < SQLITE_ALIVE_FOR
        ]
        # at most one daemon runs on SQLite; should two rows look alive, the newest is the running one
        holder = alive_ids[-1] if alive_ids else None
        alive = {holder: None} if holder is not None else {}
        held = dict.fromkeys(names, holder)
        counts = {holder: len(names)} if holder is not None else {}
    views = [
        DaemonView(
            id=row.id,
            host=row.host,
            pid=row.pid,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            stopped_at=row.stopped_at,
            alive=row.id in alive,
            mailboxes_held=counts.get(row.id, row.mailboxes_held if row.id in alive else 0),
            jobs=tuple(j for j in row.jobs_held.split(",") if j) if row.id in alive else (),
        )
        for row in rows
    ]
    views.sort(key=lambda d: (not d.alive, -d.id))
    return Holders(daemons=tuple(views), mailboxes=held)


# ---- the daemon's own row ---------------------------------------------------------------------------------


def register_daemon(session: Session, *, host: str, pid: int, now: datetime, backend_pid: int | None) -> int:
    """A new row for a starting daemon (forgetting long-gone ones); returns its id."""
    session.execute(delete(DaemonProcess).where(DaemonProcess.heartbeat_at < now - FORGET_AFTER))
    row = DaemonProcess(
        host=host[:255], pid=pid, started_at=now, heartbeat_at=now, backend_pid=backend_pid, mailboxes_held=0,
        jobs_held="",
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row.id


def record_heartbeat(
    session: Session,
    daemon_id: int,
    *,
    now: datetime,
    mailboxes_held: int,
    jobs: Sequence[str],
    backend_pid: int | None = None,
) -> None:
    values: dict[str, object] = {
        "heartbeat_at": now,
        "mailboxes_held": mailboxes_held,
        "jobs_held": ",".join(sorted(jobs))[:500],
        "stopped_at": None,
    }
    if backend_pid is not None:
        values["backend_pid"] = backend_pid
    session.execute(update(DaemonProcess).where(DaemonProcess.id == daemon_id).values(**values))


def record_stopped(session: Session, daemon_id: int, *, now: datetime) -> None:
    session.execute(
        update(DaemonProcess)
        .where(DaemonProcess.id == daemon_id)
        .values(stopped_at=now, heartbeat_at=now, mailboxes_held=0, jobs_held="")
    )


def record_idle(session: Session, mailbox: str, daemon_id: int | None, *, now: datetime) -> None:
    """The daemon whose IDLE on `mailbox` just connected (None: it disconnected). A dead daemon's claim is
    ignored by readers: IDLE counts as connected only while the one who claimed it holds the mailbox."""
    values = {"idle_daemon_id": daemon_id, "idle_since": now if daemon_id is not None else None}
    insert = dialect_insert(session)(MailboxStatus).values(mailbox=mailbox, consecutive_failures=0, **values)
    session.execute(insert.on_conflict_do_update(index_elements=["mailbox"], set_=values))
