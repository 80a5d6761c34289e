"""Leases on a real PostgreSQL: mailboxes spread over daemons, taken over when one dies or loses its
connection, shared again when one joins; singleton jobs run in one daemon; SQLite allows one daemon.

The daemons here are lease managers in this process, each with its own lease connection, so the test can
read what each one syncs; tests/daemon/test_cluster.py runs whole daemon processes against Dovecot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from daemon.leases import DaemonRunningError, PostgresLeases, SqliteLeases, open_leases, singleton
from models.leases import read_holders
from tests.fixtures.database import TestDatabase

TICK = 0.3


class FakeDaemon:
    """A lease manager and the set of mailboxes it is syncing right now, as its callbacks see them."""

    def __init__(self, db: TestDatabase, mailboxes: Callable[[], list[str]], shared: dict[str, int]) -> None:
        self.syncing: set[str] = set()
        self.shared = shared  # mailbox -> how many daemons sync it at this instant (must never exceed 1)
        self.guard = threading.Lock()
        self.leases = open_leases(
            db.engine, wanted=mailboxes, acquire=self.acquire, release=self.release, tick=TICK
        )

    def acquire(self, name: str) -> None:
        with self.guard:
            self.shared[name] = self.shared.get(name, 0) + 1
            assert self.shared[name] == 1, f"{name} synced by two daemons at once"
            self.syncing.add(name)

    def release(self, name: str, at_once: bool) -> None:
        time.sleep(0.05)  # a sync finishing its batch
        with self.guard:
            self.syncing.discard(name)
            self.shared[name] -= 1


@pytest.fixture
def daemons(pg_db: TestDatabase) -> Iterator[Callable[[list[str]], FakeDaemon]]:
    started: list[FakeDaemon] = []
    shared: dict[str, int] = {}

    def start(mailboxes: list[str]) -> FakeDaemon:
        daemon = FakeDaemon(pg_db, lambda: mailboxes, shared)
        daemon.leases.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.leases.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def balanced(group: list[FakeDaemon], mailboxes: list[str]) -> bool:
    sizes = sorted(len(d.syncing) for d in group)
    covered = set().union(*(d.syncing for d in group))
    return covered == set(mailboxes) and sizes[-1] - sizes[0] <= 1 and sum(sizes) == len(mailboxes)


def test_mailboxes_spread_evenly_and_a_dead_daemons_share_is_taken_over(pg_db: TestDatabase, daemons) -> None:
    mailboxes = [f"box{i:02d}" for i in range(10)]
    group = [daemons(mailboxes) for _ in range(3)]
    wait_for(lambda: balanced(group, mailboxes), 15, "10 mailboxes spread as 4/3/3 over three daemons")
    assert sorted(len(d.syncing) for d in group) == [3, 3, 4]

    # what status and metrics read: every mailbox has one live holder, matching who syncs it
    with pg_db.sessions() as session:
        holders = read_holders(session, mailboxes, now=time_now())
    assert len(holders.alive) == 3
    by_id = {d.leases.daemon_id: d for d in group}
    for name in mailboxes:
        holder = holders.holder(name)
        assert holder is not None and name in by_id[holder.id].syncing

    # the server ends one daemon's lease connection (as when its process is killed)
    victim = group[1]
    terminate_lease_connection(pg_db, victim)
    wait_for(lambda: not victim.syncing, 5, "the daemon that lost its connection to drop its mailboxes")
    # the others take its share; it rejoins like a new daemon and gets a share back
    took = wait_for(lambda: balanced(group, mailboxes), 30, "the mailboxes to be shared again")
    assert took < 30


def test_a_new_daemon_takes_its_share_without_restarting_the_others(pg_db: TestDatabase, daemons) -> None:
    mailboxes = [f"m{i}" for i in range(9)]
    group = [daemons(mailboxes) for _ in range(2)]
    wait_for(lambda: balanced(group, mailboxes), 15, "9 mailboxes over two daemons")
    group.append(daemons(mailboxes))
    wait_for(lambda: balanced(group, mailboxes), 15, "the third daemon to take its share")
    assert sorted(len(d.syncing) for d in group) == [3, 3, 3]


def test_a_daemon_that_stops_hands_its_mailboxes_to_the_others(pg_db: TestDatabase, daemons) -> None:
    mailboxes = [f"s{i}" for i in range(6)]
    group = [daemons(mailboxes) for _ in range(3)]
    wait_for(lambda: balanced(group, mailboxes), 15, "6 mailboxes over three daemons")
    group[0].leases.close()
    assert not group[0].syncing
    wait_for(lambda: balanced(group[1:], mailboxes), 10, "the two left to take all six")
    with pg_db.sessions() as session:
        holders = read_holders(session, mailboxes, now=time_now())
    assert len(holders.alive) == 2
    stopped = next(d for d in holders.daemons if d.id == group[0].leases.daemon_id)
    assert not stopped.alive and stopped.stopped_at is not None


def test_a_singleton_job_runs_in_one_daemon_and_moves_when_it_dies(pg_db: TestDatabase, daemons) -> None:
    first, second = daemons([]), daemons([])
    wait_for(lambda: first.leases.daemon_id is not None and second.leases.daemon_id is not None, 10, "join")
    runners = [d for d in (first, second) if d.leases.holds_job("webhooks")]
    assert len(runners) == 1
    other = second if runners[0] is first else first
    assert not other.leases.holds_job("webhooks")
    terminate_lease_connection(pg_db, runners[0])
    wait_for(lambda: other.leases.holds_job("webhooks"), 10, "the other daemon to take the job")


def test_singleton_outside_a_daemon_is_a_run_lock(db: TestDatabase) -> None:
    with singleton(db.sessions, "relink") as mine:
        assert mine
        with singleton(db.engine, "relink") as again:
            assert not again, "a second run of the same job must be refused while the first runs"
        with singleton(db.sessions, "other-job") as other:
            assert other
    with singleton(db.sessions, "relink") as after:
        assert after


def test_on_sqlite_a_second_daemon_refuses_to_start(sqlite_db: TestDatabase) -> None:
    def leases() -> SqliteLeases:
        made = open_leases(
            sqlite_db.engine, wanted=lambda: ["jane"], acquire=lambda n: None, release=lambda n, a: None
        )
        assert isinstance(made, SqliteLeases)
        return made

    first = leases()
    first.start()
    assert first.held == {"jane"}
    with pytest.raises(DaemonRunningError) as refused:
        leases().start()
    message = str(refused.value)
    assert "another daemon is already running" in message and "PostgreSQL" in message
    assert "\n" not in message
    first.close()
    again = leases()
    again.start()  # the lock died with the first daemon's stop
    again.close()


def terminate_lease_connection(db: TestDatabase, daemon: FakeDaemon) -> None:
    leases = daemon.leases
    assert isinstance(leases, PostgresLeases)
    admin = create_engine(db.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        backend = conn.execute(
            text("SELECT backend_pid FROM daemons WHERE id = :id"), {"id": leases.daemon_id}
        ).scalar_one()
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar()
    admin.dispose()


def time_now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)
