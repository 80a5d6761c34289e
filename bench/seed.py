"""A fast bulk seeder for benchmarks: realistic-looking users, companies, contacts, deals and activities.

`seed(engine, contacts=100_000, deals=20_000, activities=1_000_000)` fills a migrated database (the default
pipeline from the migrations must be there) in well under two minutes: rows are generated in Python from a
seeded random generator and written with PostgreSQL's COPY (psycopg) or SQLite's executemany in one
transaction per table, bypassing the ORM. Ids are assigned here, so the foreign keys line up without
round trips, and sequences are moved past them afterwards.

What the data looks like (relative to `now`, over two years of history):
- 25 reps (no password: benchmarks create their own login user), one company per five contacts.
- Contacts created uniformly over two years, one address each; contact #1 of the seed (`busy_contact_id`)
  has `busy_activities` activities (5,000 by default), the rest are spread evenly.
- Deals in the first pipeline: `open_deals` open (default 40 %) spread over the open stages, the rest won
  (60 %) or lost, each with one contact, a company and an owner; 10 % are in EUR, the rest in USD.
- Activities: 70 % emails (half outbound), 10 % calls, 5 % meetings, 10 % notes, 5 % completed tasks; a third
  are on a deal. Every record's `last_activity_at` agrees with its activities.
- Planned activities (tasks): 85 % of open deals have one open, due within three weeks either side of `now`;
  every closed deal has a done one; each rep has 20 personal to-dos.
"""

from __future__ import annotations

import random
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from models.schema import Base

DAY = 86400
HISTORY_DAYS = 730
CHUNK = 20_000
KINDS = ("email", "call", "meeting", "note", "task")
KIND_WEIGHTS = (70, 10, 5, 10, 5)
REBUILT_INDEXES = ("contacts", "deals", "activities", "activity_contacts")


@dataclass(frozen=True)
class SeedResult:
    users: int
    companies: int
    contacts: int
    deals: int
    open_deals: int
    activities: int
    busy_contact_id: int
    busy_contact_activities: int
    pipeline_id: int
    rep_ids: list[int]
    seconds: float


def seed(
    engine: Engine,
    *,
    contacts: int = 100_000,
    deals: int = 20_000,
    activities: int = 1_000_000,
    open_deals: int | None = None,
    seed: int = 1,
    now: datetime | None = None,
    reps: int = 25,
    busy_activities: int = 5_000,
    analyze: bool = True,
) -> SeedResult:
    """Fill a migrated database with generated data; see the module docstring for its shape."""
    started = time.perf_counter()
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    now_ts = int(now.timestamp())
    start_ts = now_ts - HISTORY_DAYS * DAY
    open_deals = int(deals * 0.4) if open_deals is None else min(open_deals, deals)
    companies = max(1, contacts // 5)
    contacts = max(1, contacts)
    busy = min(busy_activities, activities // 4) if activities else 0
    writer = _Writer(engine)

    with engine.connect() as conn:
        pipeline_id = conn.execute(text("SELECT id FROM pipelines ORDER BY position, id LIMIT 1")).scalar()
        if pipeline_id is None:
            raise RuntimeError("no pipeline: migrate the database before seeding it")
        stage_rows = conn.execute(
            text("SELECT id, kind FROM stages WHERE pipeline_id = :p ORDER BY position, id"),
            {"p": pipeline_id},
        ).all()
        base = {
            table: conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one()
            for table in (
                "users",
                "companies",
                "company_domains",
                "contacts",
                "contact_emails",
                "deals",
                "deal_stage_changes",
                "activities",
                "tasks",
            )
        }
    open_stages = [sid for sid, kind in stage_rows if kind == "open"]
    won_stage = next(sid for sid, kind in stage_rows if kind == "won")
    lost_stage = next(sid for sid, kind in stage_rows if kind == "lost")

    user_ids = [base["users"] + i + 1 for i in range(reps)]
    company_ids = base["companies"] + 1
    contact_first = base["contacts"] + 1
    deal_first = base["deals"] + 1

    # --- plan: every random choice is made here, so last_activity_at can be set on the parents
    contact_company = array("q", (company_ids + rng.randrange(companies) for _ in range(contacts)))
    contact_owner = array("q", (rng.choice(user_ids) for _ in range(contacts)))
    contact_created = array("q", (rng.randrange(start_ts, now_ts) for _ in range(contacts)))

    deal_created = array("q")
    deal_stage = array("q")
    deal_entered = array("q")
    deal_closed = array("q")
    for index in range(deals):
        created = rng.randrange(start_ts, now_ts - DAY)
        deal_created.append(created)
        if index < open_deals:
            deal_stage.append(rng.choice(open_stages))
            deal_entered.append(rng.randrange(created, now_ts))
            deal_closed.append(0)
        else:
            closed = min(now_ts - 60, created + rng.randrange(5 * DAY, 120 * DAY))
            deal_stage.append(won_stage if rng.random() < 0.6 else lost_stage)
            deal_entered.append(closed)
            deal_closed.append(closed)
    deal_contact = array("q", (rng.randrange(contacts) for _ in range(deals)))

    act_contact = array("q")
    act_deal = array("q")
    act_time = array("q")
    act_kind = array("b")
    act_out = array("b")
    act_author = array("q")
    kinds_by_weight = [k for k, w in zip(range(len(KINDS)), KIND_WEIGHTS, strict=True) for _ in range(w)]
    for index in range(activities):
        contact = 0 if index < busy else rng.randrange(contacts)
        deal = rng.randrange(deals) if deals and rng.random() < 0.33 else -1
        low = int(deal_created[deal]) if deal >= 0 else int(contact_created[contact]) - 30 * DAY
        act_contact.append(contact)
        act_deal.append(deal)
        act_time.append(rng.randrange(low, now_ts))
        kind = rng.choice(kinds_by_weight)
        act_kind.append(kind)
        outbound = kind != 0 or rng.random() < 0.5
        act_out.append(1 if outbound else 0)
        act_author.append(rng.choice(user_ids) if outbound else 0)

    contact_last = array("q", bytes(8 * contacts))
    deal_last = array("q", bytes(8 * max(deals, 1)))
    for index in range(activities):
        when = act_time[index]
        contact = act_contact[index]
        if when > contact_last[contact]:
            contact_last[contact] = when
        deal = act_deal[index]
        if deal >= 0 and when > deal_last[deal]:
            deal_last[deal] = when
    company_last: dict[int, int] = {}
    for contact in range(contacts):
        company = contact_company[contact]
        if contact_last[contact] > company_last.get(company, 0):
            company_last[company] = contact_last[contact]

    ts = writer.timestamp
    nowv = ts(now_ts)

    writer.write(
        "users",
        ("id", "email", "name", "role", "password_hash", "active", "alerts_enabled", "created_at"),
        (
            (uid, f"bench-rep{uid}@team.example", f"Rep {uid:03d}", "rep", "", True, True, ts(start_ts))
            for uid in user_ids
        ),
    )
    writer.write(
        "companies",
        ("id", "name", "owner_id", "created_at", "last_activity_at"),
        (
            (
                company_ids + i,
                f"Company {i + 1:06d}",
                rng.choice(user_ids),
                ts(start_ts),
                ts(company_last[company_ids + i]) if company_ids + i in company_last else None,
            )
            for i in range(companies)
        ),
    )
    writer.write(
        "company_domains",
        ("id", "company_id", "domain"),
        (
            (base["company_domains"] + i + 1, company_ids + i, f"company{company_ids + i}.example")
            for i in range(companies)
        ),
    )
    writer.write(
        "contacts",
        (
            "id",
            "name",
            "title",
            "phone",
            "company_id",
            "owner_id",
            "lead_source",
            "created_at",
            "last_activity_at",
        ),
        (
            (
                contact_first + i,
                f"Contact {contact_first + i:07d}",
                "Buyer",
                None,
                contact_company[i],
                contact_owner[i],
                "bench",
                ts(contact_created[i]),
                ts(contact_last[i]) if contact_last[i] else None,
            )
            for i in range(contacts)
        ),
    )
    writer.write(
        "contact_emails",
        ("id", "contact_id", "email"),
        (
            (
                base["contact_emails"] + i + 1,
                contact_first + i,
                f"person{contact_first + i}@company{contact_company[i]}.example",
            )
            for i in range(contacts)
        ),
    )

    def deal_rows() -> Iterable[Sequence[Any]]:
        today = now.date()
        for i in range(deals):
            is_open = deal_closed[i] == 0
            stage = deal_stage[i]
            status = "open" if is_open else ("won" if stage == won_stage else "lost")
            expected: date | None = None
            if is_open and rng.random() < 0.9:
                expected = today + timedelta(days=rng.randrange(-30, 240))
            contact = deal_contact[i]
            yield (
                deal_first + i,
                f"Deal {deal_first + i:06d}",
                rng.randrange(5, 500) * 10_000,
                "EUR" if rng.random() < 0.1 else "USD",
                pipeline_id,
                stage,
                contact_company[contact],
                contact_owner[contact],
                expected,
                status,
                "Price" if status == "lost" else None,
                ts(deal_created[i]),
                ts(deal_entered[i]),
                None if is_open else ts(deal_closed[i]),
                ts(deal_last[i]) if deal_last[i] else None,
                False,
            )

    writer.write(
        "deals",
        (
            "id",
            "title",
            "value",
            "currency",
            "pipeline_id",
            "stage_id",
            "company_id",
            "owner_id",
            "expected_close_on",
            "status",
            "lost_reason",
            "created_at",
            "stage_entered_at",
            "closed_at",
            "last_activity_at",
            "alerts_muted",
        ),
        deal_rows(),
    )
    writer.write(
        "deal_contacts",
        ("deal_id", "contact_id"),
        ((deal_first + i, contact_first + deal_contact[i]) for i in range(deals)),
    )

    def stage_change_rows() -> Iterable[Sequence[Any]]:
        next_id = base["deal_stage_changes"] + 1
        for i in range(deals):
            first = open_stages[0]
            yield (next_id, deal_first + i, None, first, ts(deal_created[i]), None)
            next_id += 1
            if deal_stage[i] != first:
                yield (next_id, deal_first + i, first, deal_stage[i], ts(deal_entered[i]), None)
                next_id += 1

    writer.write(
        "deal_stage_changes",
        ("id", "deal_id", "from_stage_id", "to_stage_id", "changed_at", "changed_by_id"),
        stage_change_rows(),
    )

    act_first = base["activities"] + 1

    def activity_rows() -> Iterable[Sequence[Any]]:
        for i in range(activities):
            kind = KINDS[act_kind[i]]
            contact = act_contact[i]
            deal = act_deal[i]
            email = kind == "email"
            outbound = act_out[i] == 1
            author = act_author[i] or None
            aid = act_first + i
            subject = f"{kind.title()} {aid}: about the proposal"
            yield (
                aid,
                kind,
                ts(act_time[i]),
                subject,
                "Thanks for the call; notes and next steps follow here.",
                author,
                contact_company[contact],
                deal_first + deal if deal >= 0 else None,
                nowv,
                f"<{aid}@bench.example>" if email else None,
                ("out" if outbound else "in") if email else None,
                f"person{contact_first + contact}@company{contact_company[contact]}.example"
                if email
                else None,
                "Thanks for the call; notes and next steps follow",
                False,
                False,
            )

    writer.write(
        "activities",
        (
            "id",
            "kind",
            "occurred_at",
            "subject",
            "body",
            "author_id",
            "company_id",
            "deal_id",
            "created_at",
            "message_id",
            "direction",
            "from_address",
            "snippet",
            "truncated",
            "needs_deal_review",
        ),
        activity_rows(),
    )
    writer.write(
        "activity_contacts",
        ("activity_id", "contact_id"),
        ((act_first + i, contact_first + act_contact[i]) for i in range(activities)),
    )

    # planned activities: most open deals have a next step (due within three weeks either side of now),
    # finished ones sit on closed deals, and each rep has a few personal to-dos
    planned_kinds = ("call", "meeting", "email", "todo")

    def task_rows() -> Iterable[Sequence[Any]]:
        task_id = base["tasks"]
        for i in range(deals):
            contact = deal_contact[i]
            owner = contact_owner[contact]
            is_open = deal_closed[i] == 0
            if is_open and rng.random() >= 0.85:
                continue  # open deals without a next step
            task_id += 1
            due = now_ts + rng.randrange(-21 * DAY, 21 * DAY) if is_open else deal_closed[i] - DAY
            has_time = rng.random() < 0.6
            yield (
                task_id,
                rng.choice(planned_kinds),
                f"Next step {task_id}",
                "",
                ts(due),
                has_time,
                owner,
                None if is_open else ts(deal_closed[i]),
                deal_first + i,
                contact_first + contact,
                contact_company[contact],
                ts(min(due, now_ts) - DAY),
            )
        for owner in user_ids:
            for _ in range(20):
                task_id += 1
                due = now_ts + rng.randrange(-10 * DAY, 10 * DAY)
                yield (task_id, "todo", f"To-do {task_id}", "", ts(due), True, owner, None, None, None, None,
                       ts(now_ts - 30 * DAY))  # fmt: skip

    writer.write(
        "tasks",
        (
            "id",
            "kind",
            "title",
            "notes",
            "due_at",
            "has_due_time",
            "assignee_id",
            "done_at",
            "deal_id",
            "contact_id",
            "company_id",
            "created_at",
        ),
        task_rows(),
    )
    writer.finish(analyze=analyze)
    return SeedResult(
        users=reps,
        companies=companies,
        contacts=contacts,
        deals=deals,
        open_deals=open_deals,
        activities=activities,
        busy_contact_id=contact_first,
        busy_contact_activities=busy,
        pipeline_id=pipeline_id,
        rep_ids=user_ids,
        seconds=time.perf_counter() - started,
    )


class _Writer:
    """Writes generated rows straight through the driver: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.tables: list[str] = []
        self.superuser = False
        if not self.sqlite:
            with engine.connect() as conn:
                self.superuser = conn.exec_driver_sql("SHOW is_superuser").scalar() == "on"

    def timestamp(self, seconds: int) -> Any:
        if self.sqlite:
            # the text shape SQLAlchemy's SQLite DateTime stores, so comparisons with bound values hold
            return time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(seconds))
        return datetime.fromtimestamp(seconds, UTC)

    def write(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.tables.append(table)
        names = ", ".join(columns)
        # building an index once from sorted data is far cheaper than a million random-order inserts into it
        indexes = list(Base.metadata.tables[table].indexes) if table in REBUILT_INDEXES else []
        with self.engine.begin() as conn:
            for index in indexes:
                index.drop(conn)
        self._load(table, columns, names, rows)
        with self.engine.begin() as conn:
            for index in indexes:
                index.create(conn)

    def _load(self, table: str, columns: Sequence[str], names: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.engine.connect() as conn:
            raw: Any = conn.connection.dbapi_connection
            if self.sqlite:
                cursor = raw.cursor()
                # random-order index inserts thrash SQLite's default 2 MB page cache
                cursor.execute("PRAGMA cache_size=-500000")
                # the generated ids line up by construction; checking three parents per row halves the speed
                cursor.execute("PRAGMA foreign_keys=OFF")
                cursor.execute("BEGIN")
                sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
                chunk: list[Sequence[Any]] = []
                for row in rows:
                    chunk.append(row)
                    if len(chunk) >= CHUNK:
                        cursor.executemany(sql, chunk)
                        chunk.clear()
                if chunk:
                    cursor.executemany(sql, chunk)
                cursor.execute("COMMIT")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA cache_size=-2000")
                cursor.close()
            else:
                with raw.cursor() as cursor:
                    # foreign-key triggers cost three index probes per row; the ids line up by construction.
                    # Only a superuser may skip them: anyone else just loads more slowly.
                    if self.superuser:
                        cursor.execute("SET LOCAL session_replication_role = replica")
                    with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                raw.commit()

    def finish(self, *, analyze: bool) -> None:
        with self.engine.connect() as conn:
            if not self.sqlite:
                for table in self.tables:
                    if table not in ("deal_contacts", "activity_contacts"):
                        conn.execute(
                            text(
                                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                            )
                        )
                conn.commit()
            if analyze:
                if self.sqlite:
                    conn.exec_driver_sql("ANALYZE")
                else:
                    # VACUUM too: what autovacuum does soon after a bulk load, and index-only scans need its
                    # visibility map
                    conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
            conn.commit()
