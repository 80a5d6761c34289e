"""Benchmark: the Duplicates page's query (models.duplicates.find_duplicates) and a merge's preview and merge
(models.merge) at 100,000 contacts, on SQLite and, when reachable, PostgreSQL.

Seeds a fresh database per engine: 30,000 companies with a domain each (300 pairs sharing a name, 300 pairs a
registrable domain), 100,000 contacts with one or two addresses and a phone for 60% of them, among which
about 1% are planted duplicates of each kind (same name at a company, same phone written differently,
Gmail dots and +tags), and 200,000 email activities linked to them. Prints the median of 5 runs of each
operation and its ratio to the panel's 100 ms page budget (docs/benchmarks.md).

    .venv/bin/python bench/duplicates.py [--contacts 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from models import migrate
from models.db import make_engine, make_sessionmaker
from models.duplicates import Rule, find_duplicates
from models.merge import MergeKind, merge_records, plan_merge
from models.schema import Activity, Company, CompanyDomain, Contact, ContactEmail, activity_contacts

PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BUDGET_MS = 100.0
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def seed(url: str, contacts: int, rng: random.Random) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    companies = contacts * 3 // 10
    company_rows, domain_rows = [], []
    for i in range(1, companies + 1):
        name = f"Company {i}" if i % 100 else f"Company {i - 1}"  # 1% share a name with the one before
        domain = f"company{i}.example" if i % 100 != 50 else f"eu.company{i - 1}.example"  # 1%: a subdomain
        company_rows.append({"id": i, "name": name, "created_at": NOW})
        domain_rows.append({"id": i, "company_id": i, "domain": domain})
    contact_rows, email_rows, link_rows, activity_rows = [], [], [], []
    email_id = 0
    for i in range(1, contacts + 1):
        company = rng.randint(1, companies)
        name = f"Person {i}"
        phone = f"+1 555 {i:07d}" if rng.random() < 0.6 else None
        address = f"person.{i}@company{company}.example"
        kind = i % 100
        if kind == 1 and i > 1:  # same name at the same company as the contact before
            name, company = contact_rows[-1]["name"], contact_rows[-1]["company_id"]
        elif kind == 2:  # the same phone written another way
            phone = f"001 (555) {i - 1:07d}"
            contact_rows[-1]["phone"] = f"+1 555 {i - 1:07d}"
        elif kind == 3:  # Gmail dots and a +tag
            address = f"person{i - 1}+crm@gmail.com"
            email_rows.append(
                {"id": (email_id := email_id + 1), "contact_id": i - 1, "email": f"person.{i - 1}@gmail.com"}
            )
        contact_rows.append({"id": i, "name": name, "phone": phone, "company_id": company, "created_at": NOW})
        email_rows.append({"id": (email_id := email_id + 1), "contact_id": i, "email": address})
        for _ in range(2):
            activity_id = len(activity_rows) + 1
            activity_rows.append({
                "id": activity_id, "kind": "email", "occurred_at": NOW, "subject": f"Mail {activity_id}",
                "body": "", "company_id": company, "created_at": NOW, "content_key": f"k{activity_id}",
                "snippet": "", "truncated": False, "needs_deal_review": False,
            })  # fmt: skip
            link_rows.append({"activity_id": activity_id, "contact_id": i})
    with engine.begin() as conn:
        for table, rows in (
            (Company.__table__, company_rows), (CompanyDomain.__table__, domain_rows),
            (Contact.__table__, contact_rows), (ContactEmail.__table__, email_rows),
            (Activity.__table__, activity_rows), (activity_contacts, link_rows),
        ):  # fmt: skip
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])
        if engine.dialect.name == "postgresql":
            for name in ("companies", "company_domains", "contacts", "contact_emails", "activities"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
                    )
                )
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def timed(runs: int, operation: Callable[[], object]) -> tuple[float, float]:
    """Median wall-clock and median CPU milliseconds of this process (SQLite runs in it; PostgreSQL does
    not, so its CPU figure is the client's share only)."""
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        operation()
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(times), statistics.median(cpu)


def measure(kind: str, url: str, contacts: int) -> None:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        pages: dict[str, tuple[float, float, int]] = {}
        for rule in Rule:
            groups = len(
                find_duplicates(session, [rule]).contacts or find_duplicates(session, [rule]).companies
            )
            pages[rule.value] = (*timed(5, lambda rule=rule: find_duplicates(session, [rule])), groups)

        def preview() -> None:
            keep, other = session.get(Contact, 2), session.get(Contact, 5)
            plan_merge(session, MergeKind.CONTACT, keep, other)

        preview_ms, preview_cpu = timed(5, preview)
    merges = []
    for n in range(5):
        with sessions() as session, session.begin():
            if kind == "sqlite":
                session.connection(execution_options={"sqlite_immediate": True})
            start = time.perf_counter()
            merge_records(session, MergeKind.CONTACT, 10 + n * 20, 11 + n * 20, now=NOW)
        merges.append((time.perf_counter() - start) * 1000)
    merge_ms = statistics.median(merges)
    engine.dispose()
    print(f"{kind}: {contacts:,} contacts")
    for rule, (ms, cpu, groups) in pages.items():
        ratio = ms / BUDGET_MS
        print(f"  duplicates page {rule:16} {ms:8.1f} ms (cpu {cpu:7.1f} ms)  {ratio:5.2f}x  {groups} groups")
    print(
        f"  merge preview  {preview_ms:8.1f} ms (cpu {preview_cpu:7.1f} ms)  {preview_ms / BUDGET_MS:5.2f}x"
    )
    print(f"  merge + commit {merge_ms:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        seed(url, args.contacts, random.Random(13))
        measure("sqlite", url, args.contacts)
    admin = create_engine(make_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"threadline_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        print(f"postgresql: not reachable ({str(exc.orig).strip().splitlines()[0]})")
        return
    try:
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        seed(url, args.contacts, random.Random(13))
        measure("postgresql", url, args.contacts)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
