"""Leases: which daemon syncs each mailbox, and which one runs each singleton job.

Several `threadline daemon` processes may run against one PostgreSQL database. Each mailbox is synced, and
its IDLE held, by exactly one of them at a time; the mailboxes are spread evenly over the live daemons; the
mailboxes of a daemon that dies are taken over by the others within seconds; a new daemon takes its share
without a restart of the others. On SQLite one daemon runs at most: a second refuses to start.

## Singleton jobs (for every job that must run once, not once per daemon)

Schedule the job in every daemon as usual, and open its body with `singleton`:

    from daemon.leases import singleton

    def deliver_webhooks(sessions: sessionmaker[Session], ...) -> None:
        with singleton(sessions, "webhooks") as mine:
            if not mine:
                return  # another daemon (or a `--once` run by hand) has this job
            ...

`singleton(sessions_or_engine, name)` yields True in one process at a time, and never waits. Inside a
daemon the job is also leased to one daemon for as long as that daemon lives (a `LeaseKind.JOB` lease,
taken on first use and kept), so a job fired by the schedulers of three daemons at 08:00 runs in exactly
one of them, not once in each; if that daemon dies, the next firing runs in another. Outside a daemon (a
command run by hand) it is a run lock for the block: a manual run and a daemon's run never overlap. The
alert scan uses it under the name "alerts"; choose a short, fixed name per job.

## Mechanism: PostgreSQL advisory locks on a dedicated connection

Chosen over a lease table with heartbeats and `FOR UPDATE SKIP LOCKED` because the server already knows
when a holder is gone: session-level advisory locks are released by PostgreSQL itself the moment the
holding connection ends (a killed process's socket closes; a lost machine is found by the TCP keepalives
this connection sets on both ends, within ~25 s), so no lease expiry, clock or renewal race exists, and
`pg_locks` says who holds what (models.leases reads it for status and metrics). Each daemon:

1. opens one connection of its own (not from the pool; autocommit; keepalives), registers a row in
   `daemons`, and holds its presence lock (`LeaseKind.DAEMON`, its row id) on it: the live daemons are the
   rows whose presence lock is granted to their connection;
2. every `tick` seconds (and at once when the server sends anything on that connection, e.g. the NOTIFY a
   joining daemon sends) writes its heartbeat, reads the granted locks, and balances: with n mailboxes over
   L live daemons ordered by id, the daemon of rank r keeps n // L, plus one if r < n % L (so none holds
   more than ceil(n / L)); it gives back extras and tries (`pg_try_advisory_lock`, never waiting) unheld
   mailboxes until it has its share. A mailbox nobody has taken for `ORPHAN_TICKS` ticks (e.g. it is in
   only one daemon's config file) is taken by anyone who can, share or not;
3. gives a mailbox back in that order: stop its IMAP work (the IDLE socket is shut at once, a running sync
   finishes its batch and commits), close its connections, and only then unlock, so two daemons never hold
   the same mailbox's IMAP sessions; and takes a mailbox only once it has seen it free on two ticks in a
   row (a daemon holding nothing yet, at start, takes at once), which leaves a daemon that lost its
   connection a tick to close the sessions of the mailboxes it can no longer hold;
4. when the lease connection fails (the server restarted, `pg_terminate_backend`, the network), drops every
   mailbox's IMAP sessions at once (its locks are gone, so another daemon may already be taking over), then
   reconnects and joins again like a new daemon.

Writes stay safe even in the instant two daemons overlap (a sync finishing its batch after its lease was
lost): each email is one activity by unique key and each batch commits with its cursor.

PgBouncer: advisory locks belong to a server session, so the lease connection must keep one server session
for its whole life. Point daemons at PostgreSQL directly, or at a PgBouncer pool in `pool_mode = session`;
transaction pooling would hand the locks to whichever client next uses that server connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import select as sql_select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from models.db import engine_of, transaction
from models.leases import (
    LeaseKind,
    granted_locks,
    lease_key,
    record_heartbeat,
    record_stopped,
    register_daemon,
)
from models.schema import DaemonProcess

log = logging.getLogger("threadline.leases")

TICK_SECONDS = 2.0
# A mailbox nobody took for this many ticks is taken by whoever can, above its share if need be.
ORPHAN_TICKS = 3
NOTIFY_CHANNEL = "threadline_leases"
# Server side: how soon PostgreSQL drops (and so unlocks) the connection of a daemon whose machine vanished.
SERVER_KEEPALIVE = {
    "tcp_keepalives_idle": 5,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 20000,
}
# Client side (libpq): how soon the daemon notices a server that vanished.
CLIENT_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
}

Acquire = Callable[[str], None]
Release = Callable[[str, bool], None]
"""Stop a mailbox's IMAP work and return once its connections are closed; the flag says "at once"
(the lease is already lost) rather than "finish the batch"."""


def now_utc() -> datetime:
    return datetime.now(UTC)


class DaemonRunningError(Exception):
    """Another daemon already runs on this SQLite database."""


# ---- singleton jobs ---------------------------------------------------------------------------------------

_managers: dict[str, PostgresLeases] = {}
_managers_lock = threading.Lock()


@contextlib.contextmanager
def singleton(where: sessionmaker[Session] | Engine, name: str) -> Iterator[bool]:
    """Whether this process is the one to run job `name` now (see the module docstring); never waits."""
    engine = where if isinstance(where, Engine) else engine_of(where)
    with _managers_lock:
        manager = _managers.get(_database_id(engine))
    if manager is not None and not manager.holds_job(name):
        yield False
        return
    with run_alone(engine, name) as alone:
        yield alone


@contextlib.contextmanager
def run_alone(engine: Engine, name: str) -> Iterator[bool]:
    """One run of `name` at a time across processes; yields whether this one got it (never waits).

    PostgreSQL: a session-level advisory lock on a pooled connection of its own, held for the block and
    released by the server if the process dies. SQLite: an exclusive `flock` on a file beside the database,
    which also dies with the process.
    """
    if engine.dialect.name == "postgresql":
        key = lease_key(LeaseKind.RUN, name)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    path = _sqlite_lock_path(engine, f"{name}-lock")
    if path is None:
        yield True  # a private in-memory database: no other process can share it
        return
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sqlite_lock_path(engine: Engine, suffix: str) -> Path | None:
    database = engine.url.database or ""
    if not database or database == ":memory:":
        return None
    return Path(f"{Path(database).expanduser()}.{suffix}")


def _database_id(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# ---- the leases of one daemon -----------------------------------------------------------------------------


class Leases:
    """What the daemon asks of its leases, whichever the database: `start`, `close`, `holds_job`.

    `wanted` is read every tick (the mailboxes there are now: added and removed ones are taken up and given
    back without a restart); `acquire(name)` must start the mailbox's work and return quickly; `release(name,
    at_once)` must stop it and return once its IMAP connections are closed.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        wanted: Callable[[], Sequence[str]],
        acquire: Acquire,
        release: Release,
        tick: float = TICK_SECONDS,
        now_fn: Callable[[], datetime] = now_utc,
    ) -> None:
        self.engine = engine
        self.wanted = wanted
        self.acquire = acquire
        self.release = release
        self.tick = tick
        self.now_fn = now_fn
        self.daemon_id: int | None = None
        self._held: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_wanted: list[str] = []

    @property
    def held(self) -> frozenset[str]:
        """The mailboxes this daemon syncs now."""
        return frozenset(self._held)

    def claim(self) -> None:
        """Check this daemon may run at all (SQLite: no other daemon runs); raises DaemonRunningError."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def holds_job(self, name: str) -> bool:
        raise NotImplementedError

    def _read_wanted(self) -> list[str]:
        try:
            self._last_wanted = list(dict.fromkeys(self.wanted()))
        except Exception:
            log.exception("cannot read the mailbox list; keeping the last one")
        return self._last_wanted

    def _give_back(self, name: str, at_once: bool) -> None:
        try:
            self.release(name, at_once)
        except Exception:
            log.exception("%s: stopping the mailbox's sync failed", name)

    def _take(self, name: str) -> bool:
        try:
            self.acquire(name)
        except Exception:
            log.exception("%s: starting the mailbox's sync failed", name)
            return False
        return True


def open_leases(
    engine: Engine,
    *,
    wanted: Callable[[], Sequence[str]],
    acquire: Acquire,
    release: Release,
    tick: float = TICK_SECONDS,
    now_fn: Callable[[], datetime] = now_utc,
) -> Leases:
    """The leases for this engine's database: shared over daemons on PostgreSQL, one daemon on SQLite."""
    kind = PostgresLeases if engine.dialect.name == "postgresql" else SqliteLeases
    return kind(engine, wanted=wanted, acquire=acquire, release=release, tick=tick, now_fn=now_fn)


class SqliteLeases(Leases):
    """One daemon per SQLite database: an exclusive lock file says so; it holds every mailbox and job."""

    _lock_file: Any = None

    def claim(self) -> None:
        path = _sqlite_lock_path(self.engine, "daemon-lock")
        if path is not None and self._lock_file is None:
            handle = path.open("a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                handle.close()
                raise DaemonRunningError(
                    f"another daemon is already running on {self.engine.url.database} ({owner}); "
                    "SQLite allows one daemon: stop that one first, or use PostgreSQL to run several"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            self._lock_file = handle

    def start(self) -> None:
        self.claim()
        sessions = sessionmaker(bind=self.engine)
        with transaction(sessions) as session:
            self.daemon_id = register_daemon(
                session, host=socket.gethostname(), pid=os.getpid(), now=self.now_fn(), backend_pid=None
            )
        self._reconcile()
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        self._thread.start()

    def holds_job(self, name: str) -> bool:
        return self.daemon_id is not None and not self._stopping.is_set()

    def _run(self) -> None:
        while not self._stopping.wait(self.tick):
            try:
                self._reconcile()
            except Exception:
                log.exception("lease bookkeeping failed; retrying")

    def _reconcile(self) -> None:
        wanted = self._read_wanted()
        for name in sorted(self._held - set(wanted)):
            self._give_back(name, False)
            self._held.discard(name)
        for name in wanted:
            if name not in self._held and self._take(name):
                self._held.add(name)
        self._heartbeat()

    def _heartbeat(self) -> None:
        if self.daemon_id is None:
            return
        try:
            with transaction(sessionmaker(bind=self.engine)) as session:
                record_heartbeat(
                    session, self.daemon_id, now=self.now_fn(), mailboxes_held=len(self._held), jobs=["*"]
                )
        except SQLAlchemyError as exc:
            log.warning("cannot record the daemon's heartbeat: %s", exc)

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 5)
        for name in sorted(self._held):
            self._give_back(name, False)
        self._held.clear()
        if self.daemon_id is not None:
            with contextlib.suppress(SQLAlchemyError), transaction(sessionmaker(bind=self.engine)) as session:
                record_stopped(session, self.daemon_id, now=self.now_fn())
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


class LeaseConnectionLostError(Exception):
    """The lease connection failed: every lease it held is gone."""


class PostgresLeases(Leases):
    """Advisory-lock leases held on one dedicated connection (see the module docstring)."""

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._lease_engine = create_engine(
            engine.url, poolclass=NullPool, connect_args={**CLIENT_KEEPALIVE}, isolation_level="AUTOCOMMIT"
        )
        self._conn: Connection | None = None
        self._backend_pid: int | None = None
        self._releasing: dict[str, Future[None]] = {}
        self._jobs: set[str] = set()
        self._jobs_wanted: set[str] = set()
        self._unheld_ticks: dict[str, int] = {}
        self._joined_at = 0.0
        self._lock = threading.RLock()  # the lease connection is used by the lease thread and holds_job
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lease-release")
        self._rng = random.Random()

    # -- life ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        with _managers_lock:
            _managers[_database_id(self.engine)] = self
        try:
            self._connect()
        except SQLAlchemyError as exc:
            log.warning("cannot open the lease connection yet (%s); retrying", _reason(exc))
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.tick + 10)
        with _managers_lock:
            if _managers.get(_database_id(self.engine)) is self:
                del _managers[_database_id(self.engine)]
        # give every mailbox back in parallel (each finishes its batch), then let the server unlock all
        futures = [self._pool.submit(self._give_back, name, False) for name in sorted(self._held)]
        futures.extend(self._releasing.values())
        for future in futures:
            with contextlib.suppress(Exception):
                future.result(timeout=120)
        self._held.clear()
        self._releasing.clear()
        self._pool.shutdown(wait=True)
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
                    if self.daemon_id is not None:
                        with Session(bind=self._conn) as session:
                            record_stopped(session, self.daemon_id, now=self.now_fn())
                            session.commit()
                self._drop_connection()
        self._lease_engine.dispose()

    def holds_job(self, name: str) -> bool:
        """Whether this daemon runs job `name`: takes the job's lease now if nobody holds it."""
        with self._lock:
            self._jobs_wanted.add(name)
            if name in self._jobs:
                return True
            if self._conn is None or self._stopping.is_set():
                return False
            try:
                if self._try_lock(lease_key(LeaseKind.JOB, name)):
                    self._jobs.add(name)
                    log.info("running the %s job from this daemon", name)
                    return True
            except SQLAlchemyError:
                self._wake.set()  # the lease thread finds the connection lost and drops everything
            return False

    # -- the connection ------------------------------------------------------------------------------------

    def _connect(self) -> None:
        conn = self._lease_engine.connect()
        try:
            for setting, value in SERVER_KEEPALIVE.items():
                with contextlib.suppress(DBAPIError):
                    conn.execute(text(f"SET {setting} = {int(value)}"))
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            now = self.now_fn()
            with Session(bind=conn) as session:
                if self.daemon_id is None:
                    self.daemon_id = register_daemon(
                        session, host=socket.gethostname(), pid=os.getpid(), now=now, backend_pid=backend
                    )
                else:
                    record_heartbeat(session, self.daemon_id, now=now, mailboxes_held=0, jobs=[],
                                     backend_pid=backend)  # fmt: skip
                session.commit()
            if not self._try_lock_on(conn, lease_key(LeaseKind.DAEMON, self.daemon_id)):
                # our previous connection's backend has not been reaped yet: try again next tick
                raise LeaseConnectionLostError("the previous lease connection is still held by the server")
            conn.execute(text(f"SET application_name = 'threadline-daemon {self.daemon_id}'"))
            conn.execute(text(f"LISTEN {NOTIFY_CHANNEL}"))
            conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}, 'joined {self.daemon_id}'"))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn, self._backend_pid = conn, backend
        self._joined_at = time.monotonic()
        log.info("daemon %d joined (lease connection: backend %d)", self.daemon_id, backend)

    def _drop_connection(self) -> None:
        conn, self._conn, self._backend_pid = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def _fileno(self) -> int | None:
        conn = self._conn
        if conn is None:
            return None
        with contextlib.suppress(Exception):
            raw = conn.connection.dbapi_connection
            if raw is not None:
                return int(raw.fileno())
        return None

    # -- the loop ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        retry = 0.5
        while not self._stopping.is_set():
            if self._conn is None:
                try:
                    with self._lock:
                        self._connect()
                    retry = 0.5
                except (SQLAlchemyError, LeaseConnectionLostError) as exc:
                    log.warning("lease connection: %s; retrying in %.0f s", _reason(exc), retry)
                    self._stopping.wait(retry)
                    retry = min(retry * 2, self.tick * 2)
                    continue
            try:
                with self._lock:
                    self._balance()
            except (SQLAlchemyError, LeaseConnectionLostError) as exc:
                self._lost(exc)
                continue
            except Exception:
                log.exception("lease bookkeeping failed; retrying")
            self._wait()

    def _wait(self) -> None:
        """Until the next tick, a mailbox given back, or anything from the server (a NOTIFY, or the
        connection closing) — whichever comes first."""
        deadline = time.monotonic() + self.tick
        fd = self._fileno()
        # poll(), not select(): a daemon with hundreds of IMAP connections has descriptors above 1024
        poller = select.poll()
        if fd is not None:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.is_set():
                break
            if any(f.done() for f in self._releasing.values()):
                break
            if fd is None:
                self._stopping.wait(min(remaining, 0.2))
                continue
            try:
                events = poller.poll(int(min(remaining, 0.2) * 1000))
            except OSError:
                events = []
                self._stopping.wait(min(remaining, 0.2))
            if events:
                break
        self._wake.clear()

    def _lost(self, exc: BaseException) -> None:
        held = sorted(self._held | set(self._releasing))
        log.warning(
            "lease connection lost (%s): dropping %d mailbox(es) at once; rejoining", _reason(exc), len(held)
        )
        with self._lock:
            self._drop_connection()
            self._jobs.clear()
        futures = [self._pool.submit(self._give_back, name, True) for name in sorted(self._held)]
        for future in [*futures, *self._releasing.values()]:
            with contextlib.suppress(Exception):
                future.result(timeout=120)
        self._held.clear()
        self._releasing.clear()
        self._stopping.wait(min(1.0, self.tick))

    def _balance(self) -> None:
        conn = self._conn
        if conn is None or self.daemon_id is None:
            raise LeaseConnectionLostError("no lease connection")
        self._unlock_released(conn)
        now = self.now_fn()
        with Session(bind=conn) as session:
            record_heartbeat(
                session, self.daemon_id, now=now, mailboxes_held=len(self._held), jobs=sorted(self._jobs)
            )
            session.commit()
            locks = granted_locks(session)
            rows = session.execute(
                sql_select(DaemonProcess.id, DaemonProcess.backend_pid).where(
                    DaemonProcess.stopped_at.is_(None)
                )
            ).all()
        live = sorted(
            daemon_id
            for daemon_id, backend in rows
            if backend is not None and locks.get(lease_key(LeaseKind.DAEMON, daemon_id)) == backend
        )
        if self.daemon_id not in live:
            raise LeaseConnectionLostError("this daemon's presence lock is not held")
        mine = {key for key, pid in locks.items() if pid == self._backend_pid}
        lost = {name for name in self._held if lease_key(LeaseKind.MAILBOX, name) not in mine}
        if lost:
            raise LeaseConnectionLostError(f"the server no longer lists {len(lost)} of our mailbox locks")
        self._jobs &= {job for job in self._jobs if lease_key(LeaseKind.JOB, job) in mine}

        wanted = self._read_wanted()
        rank, count = live.index(self.daemon_id), len(live)
        share = len(wanted) // count + (1 if rank < len(wanted) % count else 0)

        # give back what is no longer wanted, then what is above our share
        for name in sorted(self._held - set(wanted)):
            self._begin_release(name)
        extra = len(self._held) - share
        if extra > 0:
            for name in sorted(self._held, key=lambda n: lease_key(LeaseKind.MAILBOX, n))[:extra]:
                self._begin_release(name)

        # settle for one tick after joining, so daemons started together see each other before taking
        settled = time.monotonic() - self._joined_at >= self.tick * 0.9 or count > 1
        unheld = [
            n
            for n in wanted
            if lease_key(LeaseKind.MAILBOX, n) not in locks
            and n not in self._held
            and n not in self._releasing
        ]
        self._unheld_ticks = {n: self._unheld_ticks.get(n, 0) + 1 for n in unheld}
        if settled:
            self._rng.shuffle(unheld)  # daemons taking at the same moment mostly try different mailboxes
            starting = not self._held
            for name in unheld:
                seen_free = self._unheld_ticks.get(name, 0)
                if seen_free < 2 and not starting:
                    continue  # free for one tick only: its last holder may still be closing its sessions
                if len(self._held) >= share and seen_free <= ORPHAN_TICKS:
                    continue
                if self._try_lock(lease_key(LeaseKind.MAILBOX, name)):
                    if self._take(name):
                        self._held.add(name)
                        self._unheld_ticks.pop(name, None)
                    else:
                        self._unlock(lease_key(LeaseKind.MAILBOX, name))

        for job in sorted(self._jobs_wanted - self._jobs):
            if lease_key(LeaseKind.JOB, job) not in locks and self._try_lock(lease_key(LeaseKind.JOB, job)):
                self._jobs.add(job)

    def _begin_release(self, name: str) -> None:
        self._held.discard(name)
        log.info("%s: giving the mailbox back", name)
        self._releasing[name] = self._pool.submit(self._give_back, name, False)

    def _unlock_released(self, conn: Connection) -> None:
        for name, future in list(self._releasing.items()):
            if future.done():
                self._unlock(lease_key(LeaseKind.MAILBOX, name))
                del self._releasing[name]

    def _try_lock(self, key: int) -> bool:
        if self._conn is None:
            raise LeaseConnectionLostError("no lease connection")
        return self._try_lock_on(self._conn, key)

    @staticmethod
    def _try_lock_on(conn: Connection, key: int) -> bool:
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())

    def _unlock(self, key: int) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
