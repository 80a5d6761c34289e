"""Benchmark: `threadline import contacts` of a 10,000-row CSV, target under 10 seconds.

Generates a realistic file (about 1,500 companies with domains, 10% of rows with two addresses, owners,
~3% bad rows of several kinds), then runs the installed `threadline` command as a subprocess on a fresh
SQLite database and, when reachable, on a fresh PostgreSQL database ($THREADLINE_TEST_PG_URL or the local
server; the script creates and drops its own database). Each database is timed twice: the first import
(all creates) and a re-import of the same file (all updates). The time is the whole command, interpreter
start included; the command's own CPU time and the load average are printed too, since a busy machine
stretches the wall-clock time.

    .venv/bin/python bench/import_contacts.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

TARGET_SECONDS = 10.0
PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIRST = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Lucas",
    "Sophia",
    "Mateo",
    "Mia",
    "Hugo",
    "Amelia",
    "Arjun",
    "Chloe",
    "Kenji",
    "Zoe",
    "Omar",
    "Lena",
    "Priya",
    "Jonas",
    "Elena",
    "Felix",
    "Aisha",
    "Tomás",
    "Grace",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Nguyen",
    "Johnson",
    "Rossi",
    "Kim",
    "Martin",
    "Silva",
    "Novak",
    "Larsen",
    "Dubois",
    "Patel",
    "Tanaka",
    "Schmidt",
    "López",
    "Walker",
    "Fischer",
    "Moreau",
    "Costa",
    "Khan",
    "Weber",
]
WORDS = [
    "North",
    "Blue",
    "Iron",
    "Silver",
    "Green",
    "Red",
    "Bright",
    "Stone",
    "Clear",
    "Ever",
    "High",
    "Lake",
    "Oak",
    "Pine",
    "River",
    "Summit",
    "Sun",
    "West",
    "Harbor",
    "Falcon",
    "Key",
    "Orion",
    "Quartz",
    "Cobalt",
]
KINDS = [
    "Logistics",
    "Analytics",
    "Robotics",
    "Foods",
    "Health",
    "Energy",
    "Software",
    "Labs",
    "Capital",
    "Studios",
    "Systems",
    "Retail",
    "Media",
    "Partners",
    "Works",
    "Group",
]
TITLES = [
    "CEO",
    "CTO",
    "VP Sales",
    "Head of Operations",
    "Procurement Manager",
    "IT Director",
    "Office Manager",
]
OWNERS = ["ann@team.example", "bob@team.example"]


def generate(path: Path, rows: int, rng: random.Random) -> int:
    """Write the CSV; returns how many rows are deliberately bad."""
    companies = []
    for n in range(max(1, rows // 7)):
        name = f"{rng.choice(WORDS)}{rng.choice(WORDS).lower()} {rng.choice(KINDS)}"
        companies.append((f"{name} {n}", f"{name.lower().replace(' ', '-')}-{n}.example"))
    bad = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "first_name",
                "last_name",
                "email",
                "phone",
                "title",
                "company",
                "company_domain",
                "owner",
                "lead_source",
            ]
        )
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            company, domain = rng.choice(companies)
            local = f"{first}.{last}.{n}".lower()
            emails = f"{local}@{domain}"
            if rng.random() < 0.10:
                emails += f";{local}@gmail.example"
            owner = rng.choice(OWNERS)
            title = rng.choice(TITLES)
            if rng.random() < 0.03:
                bad += 1
                kind = rng.randrange(3)
                if kind == 0:
                    emails = f"{local}-at-{domain}"
                elif kind == 1:
                    owner = "nobody@team.example"
                else:
                    title = "x" * 250
            writer.writerow(
                [
                    first,
                    last,
                    emails,
                    f"+1 555 {rng.randint(1000000, 9999999)}",
                    title,
                    company,
                    domain,
                    owner,
                    rng.choice(["Website", "Referral", "Conference", ""]),
                ]
            )
    return bad


def threadline_command() -> str:
    found = shutil.which("threadline", path=str(Path(sys.executable).parent))
    if not found:
        sys.exit("the threadline console script is not installed next to this Python (run `make setup`)")
    return found


def run(
    command: list[str], config: Path, stdin: str | None = None
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run the command; (wall seconds, CPU seconds of the child, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [threadline_command(), "--config", str(config), *command],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


def bench(label: str, url: str, csv_path: Path, work: Path, rows: int, bad: int) -> None:
    config = work / f"{label}.toml"
    config.write_text(f'[database]\nurl = "{url}"\n[logging]\nlevel = "WARNING"\n', encoding="utf-8")
    for command in (["db", "upgrade"],):
        _, _, result = run(command, config)
        if result.returncode != 0:
            sys.exit(f"{label}: {' '.join(command)} failed: {result.stderr.strip()}")
    for owner in OWNERS:
        _, _, result = run(
            ["user", "add", owner, "--name", owner, "--role", "rep", "--password-stdin"],
            config,
            stdin="bench password\n",
        )
        if result.returncode != 0:
            sys.exit(f"{label}: user add failed: {result.stderr.strip()}")
    for attempt in ("first import", "re-import"):
        seconds, cpu, result = run(["import", "contacts", str(csv_path)], config)
        skipped_lines = [line for line in result.stderr.splitlines() if ": skipped: " in line]
        if result.returncode not in (0, 1) or len(skipped_lines) != bad:
            sys.exit(
                f"{label}: unexpected result (exit {result.returncode}, {len(skipped_lines)} skipped, "
                f"{bad} expected): {result.stderr[-500:]}"
            )
        print(
            f"{label:<10} {attempt:<12} {rows} rows in {seconds:6.2f} s = {rows / seconds:7.0f} rows/s; "
            f"{seconds / TARGET_SECONDS:.2f} of the {TARGET_SECONDS:.0f} s target; command CPU {cpu:.2f} s, "
            f"load {os.getloadavg()[0]:.1f}  [{result.stdout.strip().rsplit(': ', 1)[-1]}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        work = Path(tmp)
        csv_path = work / "contacts.csv"
        bad = generate(csv_path, args.rows, random.Random(1))
        print(
            f"generated {csv_path.name}: {args.rows} rows ({bad} bad), {csv_path.stat().st_size / 1e6:.1f} MB"
        )
        bench("sqlite", f"sqlite:///{work / 'bench.db'}", csv_path, work, args.rows, bad)

        admin_url = make_url(PG_ADMIN_URL)
        if admin_url.password:
            print("postgresql skipped: the admin URL has a password (the config would need url_env)")
            return
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"threadline_bench_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except OperationalError as exc:
            print(
                f"postgresql skipped: not reachable at {PG_ADMIN_URL}: "
                f"{str(exc.orig).strip().splitlines()[0]}"
            )
            admin.dispose()
            return
        try:
            bench(
                "postgresql",
                admin_url.set(database=name).render_as_string(hide_password=False),
                csv_path,
                work,
                args.rows,
                bad,
            )
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
