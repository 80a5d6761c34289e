"""Benchmark of the alert scan over 100,000 open deals and 1,000,000 activities, on SQLite and PostgreSQL.

Seeds a fresh SQLite file and a fresh PostgreSQL database (created and dropped here; the server comes from
$THREADLINE_TEST_PG_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) with bench/seed.py:
120,000 deals of which 100,000 open, 100,000 contacts, 1,000,000 activities, plus 20,000 open tasks (a
quarter overdue). Then times `daemon.alerts.run_scan` (the lock, the three rule queries, the decision with
its idempotency keys, the commit) with sending disabled (`send=False`: SMTP cost is per owner, not per deal):

- first scan: every alert is new, so every one is inserted as a Notification (the seed leaves ~78 % of the
  open deals stalled, so this is ~83,000 inserts: the worst case, once, when alerts are first switched on);
- scans an hour and a day later: the alerts already decided are recognised, the few deals that stalled in
  between are decided (the daily steady state);
- send: all those digests delivered to a local aiosmtpd (25 owners), timed separately.

Prints seconds and the ratio against the 2 s target (below 1.0 meets it).

    .venv/bin/python -m bench.alerts                 # full size, both databases
    .venv/bin/python -m bench.alerts --scale 0.1 --db sqlite
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from bench.seed import seed
from daemon.alerts import retry_unsent, run_scan
from models import migrate
from models.db import make_engine, make_sessionmaker
from models.schema import Base, Notification, Task
from settings import Settings, SmtpSettings

TARGET_SECONDS = 2.0
PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, _server: object, _session: object, _envelope: object) -> str:
        self.count += 1
        return "250 OK"


def add_tasks(engine: Engine, count: int, now: datetime, user_ids: list[int]) -> None:
    rows = [
        {
            "title": f"Follow-up {i}",
            "notes": "",
            "due_at": now - timedelta(days=1) if i % 4 == 0 else now + timedelta(days=1 + i % 30),
            "assignee_id": user_ids[i % len(user_ids)],
            "created_at": now - timedelta(days=30),
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Task), rows)


def bench_database(kind: str, url: str, scale: float) -> list[tuple[str, str, float]]:
    engine = make_engine(url)
    results: list[tuple[str, str, float]] = []
    controller: Controller | None = None
    try:
        migrate.upgrade(engine)
        # indexes declared in models/schema.py but not yet in a migration (work in progress) exist too
        for table in Base.metadata.sorted_tables:
            for index in table.indexes:
                index.create(engine, checkfirst=True)
        now = datetime.now(UTC).replace(microsecond=0)
        deals_open = int(100_000 * scale)
        started = time.perf_counter()
        seeded = seed(
            engine,
            contacts=int(100_000 * scale),
            deals=int(120_000 * scale),
            open_deals=deals_open,
            activities=int(1_000_000 * scale),
            now=now,
        )
        add_tasks(engine, int(20_000 * scale), now, seeded.rep_ids)
        if kind == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        print(
            f"[{kind}] seeded {seeded.open_deals:,} open deals, {seeded.activities:,} activities "
            f"in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
        sessions = make_sessionmaker(engine)
        settings = Settings()

        started = time.perf_counter()
        first = run_scan(settings, sessions, now=now, send=False)
        results.append(
            (kind, f"first scan ({first.decided:,} alerts decided)", time.perf_counter() - started)
        )

        for label, later in (("an hour later", timedelta(hours=1)), ("a day later", timedelta(days=1))):
            started = time.perf_counter()
            repeat = run_scan(settings, sessions, now=now + later, send=False)
            results.append(
                (kind, f"scan {label} ({repeat.decided:,} new alerts)", time.perf_counter() - started)
            )

        sink = _Sink()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        smtp = SmtpSettings(host="127.0.0.1", port=port, security="none")
        started = time.perf_counter()
        sent = retry_unsent(replace(settings, smtp=smtp), sessions, now=now + timedelta(days=1))
        elapsed = time.perf_counter() - started
        results.append(
            (kind, f"send {sent.digests_sent} digests ({sent.notifications_sent:,} alerts)", elapsed)
        )
        with sessions() as session:
            unsent = session.scalar(select(func.count()).where(Notification.sent_at.is_(None)))
        assert unsent == 0 and sink.count == sent.digests_sent, (unsent, sink.count)
    finally:
        if controller is not None:
            controller.stop()
        engine.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full data size (default 1)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    results: list[tuple[str, str, float]] = []
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results += bench_database("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.scale)
    if args.db in ("postgresql", "both"):
        admin_url = make_url(PG_ADMIN_URL)
        name = f"threadline_bench_alerts_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            results += bench_database("postgresql", url, args.scale)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(f"{'database':<11} {'measurement':<52} {'seconds':>8} {'ratio to 2 s':>13}")
    for kind, what, seconds in results:
        print(f"{kind:<11} {what:<52} {seconds:>8.3f} {seconds / TARGET_SECONDS:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
