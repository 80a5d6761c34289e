"""Benchmark of linking earlier mail: the history of 1,000 new contacts out of an index of 100,000 skipped
messages, against a real Dovecot, on SQLite and PostgreSQL.

A Dovecot user's INBOX is loaded (MULTIAPPEND) with `--messages` short inbound messages (default 100,000) from
`--people` senders nobody knows (default 10,000, so ten messages each, dates spread over the past year). Per
database (a fresh SQLite file, a fresh PostgreSQL database created and dropped here):

  (a) the sync, in process, skips every message and indexes it: its time, and the index's size on disk
      (SQLite: the `dbstat` pages of the history tables and their indexes; PostgreSQL:
      pg_total_relation_size of the three tables) divided by the messages indexed: bytes per message;
  (b) 1,000 of the senders become contacts in one transaction (models.contacts.create_contacts, as the CSV
      import makes them: each queues its relink request);
  (c) `relink_history` answers the queue: finds their messages in the index, fetches them again by UID,
      logs them through the sync's pipeline. Its wall time, the index lookup alone, and messages linked/s.

    .venv/bin/python -m bench.relink                                   # 100,000 messages, both databases
    .venv/bin/python -m bench.relink --messages 20000 --skip-postgres
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench.ingest import start_dovecot
from daemon.matching import Team
from daemon.relink import relink_history
from daemon.sync import sync_mailbox
from daemon.workers import ParserPool
from models import migrate
from models.contacts import ContactToCreate, create_contacts
from models.db import make_engine, make_sessionmaker, transaction
from models.history import find_history, pending_requests
from models.schema import Activity, HistoryMessage
from settings import MailboxSettings, MatchingSettings, Secret, TeamSettings

PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEAM_DOMAIN = "teamcorp.example"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HISTORY_TABLES = ("history_messages", "history_participants", "history_addresses")


def message(i: int, sender: int, rng: random.Random) -> bytes:
    when = NOW - timedelta(minutes=rng.randrange(360 * 24 * 60))
    cc = f"Cc: colleague{sender}@corp{sender % 997}.example\r\n" if i % 3 == 0 else ""
    return (
        f"From: Person {sender} <person{sender}@corp{sender % 997}.example>\r\n"
        f"To: Sam Rivera <sam@{TEAM_DOMAIN}>\r\n{cc}"
        f"Subject: Question {i} about the offer\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"Message-ID: <bench-relink-{i}@corp{sender % 997}.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello Sam,\r\n\r\ncould you tell me more about item {i}?\r\n\r\nPerson {sender}\r\n"
    ).encode()


def index_bytes(engine: object, kind: str) -> int:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        if kind == "sqlite":
            rows = connection.execute(text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
            names = {
                str(name): int(size) for name, size in rows if any(t in str(name) for t in HISTORY_TABLES)
            }
            return sum(names.values())
        return sum(
            int(connection.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
            for t in HISTORY_TABLES
        )


def run(kind: str, url: str, mailbox: MailboxSettings, people: int, contacts: int) -> dict[str, float]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    matching = MatchingSettings(batch_size=500)
    team = Team.of(TeamSettings(domains=(TEAM_DOMAIN,)), [mailbox])
    with ParserPool(matching) as parser:
        began = time.perf_counter()
        synced = sync_mailbox(
            mailbox, sessions, matching=matching, team=team, parser=parser, now_fn=lambda: NOW
        )
        sync_seconds = time.perf_counter() - began
        assert synced.error is None, synced.error
        with sessions() as session:
            indexed = int(session.scalar(select(func.count()).select_from(HistoryMessage)) or 0)
        size = index_bytes(engine, kind)

        chosen = random.Random(7).sample(range(people), contacts)
        with transaction(sessions) as session:
            create_contacts(
                session,
                [ContactToCreate(f"Person {p}", (f"person{p}@corp{p % 997}.example",)) for p in chosen],
                now=NOW,
            )
        began = time.perf_counter()
        with sessions() as session:
            _, selection = pending_requests(session)
            found = len(find_history(session, selection))
        lookup_seconds = time.perf_counter() - began
        began = time.perf_counter()
        result = relink_history(
            [mailbox], sessions, matching=matching, team=team, parser=parser, now_fn=lambda: NOW
        )
        relink_seconds = time.perf_counter() - began
        assert result.ok, result.errors
        with sessions() as session:
            activities = int(session.scalar(select(func.count()).select_from(Activity)) or 0)
    engine.dispose()
    return {
        "sync_seconds": sync_seconds,
        "skipped": synced.skipped,
        "indexed": indexed,
        "index_bytes": size,
        "bytes_per_message": size / max(indexed, 1),
        "found": found,
        "lookup_seconds": lookup_seconds,
        "relink_seconds": relink_seconds,
        "logged": result.logged,
        "activities": activities,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=1_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)

    server = start_dovecot()
    try:
        user = f"bench{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        server.add_user(user, password)
        rng = random.Random(1)
        began = time.perf_counter()
        for start in range(0, args.messages, 5000):
            chunk = range(start, min(start + 5000, args.messages))
            server.append(user, "INBOX", [message(i, i % args.people, rng) for i in chunk])
        loaded = time.perf_counter() - began
        print(f"loaded {args.messages:,} messages from {args.people:,} senders in {loaded:.0f} s")
        mailbox = MailboxSettings(
            name=user, host=server.host, username=user, password=Secret(password, "bench"), port=server.port,
            security="none", folders=("INBOX",), owner=f"sam@{TEAM_DOMAIN}", timeout_seconds=60.0,
        )  # fmt: skip
        kinds = ["sqlite"] + ([] if args.skip_postgres else ["postgresql"])
        for kind in kinds:
            pg_name = None
            if kind == "sqlite":
                url = f"sqlite:///{server.root / f'bench-{uuid.uuid4().hex[:8]}.db'}"
            else:
                pg_name = f"threadline_bench_relink_{uuid.uuid4().hex[:10]}"
                _pg_admin(f'CREATE DATABASE "{pg_name}"')
                url = make_url(PG_ADMIN_URL).set(database=pg_name).render_as_string(hide_password=False)
            try:
                r = run(kind, url, mailbox, args.people, args.contacts)
            finally:
                if pg_name is not None:
                    _pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            print(
                f"{kind}: sync indexed {r['indexed']:,.0f} of {r['skipped']:,.0f} skipped in "
                f"{r['sync_seconds']:.1f} s; index {r['index_bytes'] / 1e6:.1f} MB = "
                f"{r['bytes_per_message']:.0f} bytes/message"
            )
            print(
                f"{kind}: {args.contacts:,} new contacts: {r['found']:,.0f} earlier emails found in "
                f"{r['lookup_seconds'] * 1000:.0f} ms, {r['logged']:,.0f} linked in "
                f"{r['relink_seconds']:.1f} s ({r['logged'] / r['relink_seconds']:.0f} msg/s); "
                f"activities {r['activities']:,.0f}"
            )
        with open("/proc/loadavg") as handle:
            print("load average:", handle.read().split()[:3])
    finally:
        server.stop()
    return 0


def _pg_admin(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
