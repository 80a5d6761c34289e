"""Benchmark of the admin panel's heavy pages on a large CRM, on SQLite and on PostgreSQL.

Seeds 100,000 contacts, 20,000 deals and 1,000,000 activities (bench/seed.py; `--scale 0.1` for a quick run)
into a fresh SQLite file and a fresh PostgreSQL database (created and dropped here; the server comes from
$THREADLINE_TEST_PG_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres), then times:

- the report functions behind the board and the dashboard (models.reports.board / dashboard), called directly;
- the pages through the real Flask app (admin.app.create_app) with its test client, logged in as an admin:
  contact list, a busy contact's page (~5,000 activities), deal list, board, dashboard, the team's day, the
  planned activities list, a deal's and a company's page, and the search (results page and the header box's
  answers, for a common, a rare, a missing, a two-letter, an address and a phone query); and logged in as a
  rep with ~300 open planned activities: my day.

Each measurement is the median and 95th percentile of `--repeat` requests after one warm-up request. Prints a
table with the ratio against the 100 ms target (below 1.0 meets it) and the median CPU time of this process
(all of the work on SQLite; without the server's share on PostgreSQL), steadier than wall time on a busy
machine.

    .venv/bin/python -m bench.admin                 # full size, both databases
    .venv/bin/python -m bench.admin --scale 0.1 --db sqlite
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.seed import SeedResult, seed
from models import migrate
from models.db import make_engine, make_sessionmaker
from models.reports import board, dashboard
from models.schema import Role
from models.users import create_user

TARGET_MS = 100.0
"""Issue 10's floor: every page and the search answer within 100 ms (p50) at this size."""
PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
LOGIN_EMAIL = "bench-admin@team.example"
LOGIN_PASSWORD = "bench admin password"
STALL_DAYS = 14


@dataclass(frozen=True)
class Timing:
    database: str
    name: str
    samples_ms: list[float]
    cpu_ms: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(database: str, name: str, call: Callable[[], Any], repeat: int, note: str = "") -> Timing:
    call()  # warm-up: caches, first-request imports and template compilation are not what we measure
    samples = []
    cpu = []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return Timing(database, name, samples, cpu, note)


def scaled(value: int, scale: float) -> int:
    return max(1, int(value * scale))


def bench_database(kind: str, url: str, args: argparse.Namespace) -> list[Timing]:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        now = datetime.now(UTC).replace(microsecond=0)
        result = seed(
            engine,
            contacts=scaled(100_000, args.scale),
            deals=scaled(20_000, args.scale),
            activities=scaled(1_000_000, args.scale),
            busy_activities=5_000,
            now=now,
        )
        print(
            f"[{kind}] seeded {result.contacts:,} contacts, {result.deals:,} deals "
            f"({result.open_deals:,} open), {result.activities:,} activities in {result.seconds:.1f} s",
            flush=True,
        )
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            create_user(
                session, LOGIN_EMAIL, name="Bench Admin", role=Role.ADMIN, password=LOGIN_PASSWORD, now=now
            )
            session.commit()

        timings: list[Timing] = []
        with sessions() as session:

            def run_board() -> None:
                board(session, pipeline_id=result.pipeline_id, now=now, default_stall_days=STALL_DAYS)
                session.rollback()

            def run_dashboard() -> None:
                dashboard(session, now=now, tz="Europe/Paris", default_stall_days=STALL_DAYS)
                session.rollback()

            def run_dashboard_rep() -> None:
                dashboard(
                    session,
                    now=now,
                    tz="Europe/Paris",
                    default_stall_days=STALL_DAYS,
                    owner_id=result.rep_ids[0],
                )
                session.rollback()

            timings.append(measure(kind, "reports.board()", run_board, args.repeat))
            timings.append(measure(kind, "reports.dashboard()", run_dashboard, args.repeat))
            timings.append(measure(kind, "reports.dashboard(owner)", run_dashboard_rep, args.repeat))
        if not args.functions_only:
            timings.extend(bench_pages(kind, url, sessions, result, now, args))
        return timings
    finally:
        engine.dispose()


def bench_pages(
    kind: str, url: str, sessions: Any, result: SeedResult, now: datetime, args: argparse.Namespace
) -> list[Timing]:
    try:
        from admin.app import create_app
    except ImportError as exc:
        print(f"[{kind}] pages skipped: the admin app cannot be imported ({exc})", flush=True)
        return []
    from settings import (
        AdminSettings,
        AlertSettings,
        DatabaseSettings,
        Secret,
        Settings,
        TeamSettings,
    )

    settings = Settings(
        source="bench",
        database=DatabaseSettings(url=url),
        team=TeamSettings(timezone="Europe/Paris"),
        alerts=AlertSettings(stall_days=STALL_DAYS),
        admin=AdminSettings(secret_key=Secret("bench-" + uuid.uuid4().hex * 2, "bench")),
    )
    app = create_app(settings, sessions, clock=lambda: now)
    client = app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login_page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', login_page
    )
    if token is None:
        print(f"[{kind}] pages skipped: no csrf_token on /login", flush=True)
        return []
    response = client.post(
        "/login", data={"email": LOGIN_EMAIL, "password": LOGIN_PASSWORD, "csrf_token": token.group(1)}
    )
    if response.status_code not in (200, 302, 303):
        print(f"[{kind}] pages skipped: login answered {response.status_code}", flush=True)
        return []
    rep_client = _rep_client(app, sessions, result.rep_ids[0])
    pages: list[tuple[str, str]] = [
        ("page: contact list", "/admin/contact/"),
        (
            f"page: busy contact ({result.busy_contact_activities:,} act.)",
            f"/admin/records/contact/{result.busy_contact_id}",
        ),
        ("page: deal list", "/admin/deal/"),
        ("page: board", f"/admin/board/?pipeline={result.pipeline_id}"),
        ("page: dashboard", "/admin/"),
        ("page: dashboard, this year", "/admin/?period=year"),
        ("page: pipeline editor", "/admin/pipelines/"),
        ("page: team day", "/admin/day/?team=1"),
        ("page: planned activities", "/admin/task/"),
        ("page: a deal", f"/admin/records/deal/{_open_deal_id(sessions)}"),
        ("page: a company", f"/admin/records/company/{_busiest_company_id(sessions)}"),
        ("search page: 'person1'", "/admin/search/?q=person1"),
        ("search box: 'deal 0001'", "/admin/search/suggest?q=deal%200001"),
        ("search box: 'company77'", "/admin/search/suggest?q=company77"),
        ("search box: 'zzqx' (none)", "/admin/search/suggest?q=zzqx"),
        ("search box: 're' (2 letters)", "/admin/search/suggest?q=re"),
        ("search box: '@company9'", "/admin/search/suggest?q=%40company9"),
        ("search box: phone '555'", "/admin/search/suggest?q=555"),
    ]
    timings = []
    for name, path, who in [(n, p, client) for n, p in pages] + [
        ("page: my day (rep)", "/admin/day/", rep_client),
        ("page: board (rep, own deals)", f"/admin/board/?pipeline={result.pipeline_id}", rep_client),
        ("page: dashboard (rep)", "/admin/", rep_client),
    ]:
        status: list[int] = []

        def get(path: str = path, status: list[int] = status, who: Any = who) -> None:
            answer = who.get(path)
            status.append(answer.status_code)
            answer.close()

        timing = measure(kind, name, get, args.repeat)
        bad = sorted({s for s in status if s != 200})
        if bad:
            timing = Timing(kind, name, timing.samples_ms, timing.cpu_ms, f"HTTP {bad} (not valid)")
        timings.append(timing)
    return timings


def _rep_client(app: Any, sessions: Any, rep_id: int) -> Any:
    """A test client logged in as one of the seeded reps (given a password here)."""
    from models.schema import User
    from models.users import hash_password

    with sessions() as session:
        rep = session.get(User, rep_id)
        rep.password_hash = hash_password(LOGIN_PASSWORD)
        email = rep.email
        session.commit()
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token is not None, "no csrf_token on /login"
    answer = client.post(
        "/login", data={"email": email, "password": LOGIN_PASSWORD, "csrf_token": token.group(1)}
    )
    assert answer.status_code in (302, 303), f"the rep's login answered {answer.status_code}"
    return client


def _open_deal_id(sessions: Any) -> int:
    with sessions() as session:
        return int(session.execute(text("SELECT MIN(id) FROM deals WHERE status = 'open'")).scalar_one())


def _busiest_company_id(sessions: Any) -> int:
    with sessions() as session:
        return int(
            session.execute(
                text(
                    "SELECT company_id FROM deals GROUP BY company_id "
                    "ORDER BY COUNT(*) DESC, company_id LIMIT 1"
                )
            ).scalar_one()
        )


def print_table(timings: list[Timing]) -> None:
    header = (
        f"{'database':<11} {'measured':<34} {'median ms':>10} {'p95 ms':>9} {'target ms':>10} {'ratio':>6}"
        f" {'our CPU ms':>11}"
    )
    print()
    print(header)
    print("-" * len(header))
    for t in timings:
        ratio = t.median / TARGET_MS
        print(
            f"{t.database:<11} {t.name:<34} {t.median:>10.1f} {t.p95:>9.1f} {TARGET_MS:>10.0f} {ratio:>6.2f}"
            f" {t.median_cpu:>11.1f}" + (f"  {t.note}" if t.note else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the full data size (default 1.0)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page (default 15)")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--functions-only", action="store_true", help="time the report functions, not pages")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1:
        parser.error("--scale must be positive and --repeat at least 1")

    timings: list[Timing] = []
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="threadline-bench-") as folder:
            timings.extend(bench_database("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", args))
    if args.db in ("postgresql", "both"):
        admin_url = make_url(PG_ADMIN_URL)
        name = f"threadline_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = admin_url.set(database=name).render_as_string(hide_password=False)
                timings.extend(bench_database("postgresql", url, args))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
    print_table(timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
