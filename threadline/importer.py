"""CSV imports for the `threadline import contacts|deals` commands.

Owns reading a user's CSV file (UTF-8, with or without BOM), checking every row against what the database
already holds, and writing the good rows in chunks: each chunk of ~1000 rows is one transaction, so a long
import commits as it goes. A bad row is reported with its line number in the file and skipped before anything
is written, so it never loses the good rows around it. Re-importing the same file updates what the first run
created instead of duplicating it.

Exit codes: 0 all rows imported, 1 some rows were bad (the good ones are kept), 2 the file itself is unusable
(unreadable, not UTF-8, no header, a required column missing) and nothing was imported.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.contacts import (
    CompanyToCreate,
    ContactToCreate,
    add_company_domains,
    add_contact_emails,
    create_companies,
    create_contacts,
    display_name_from_email,
    normalize_email,
    update_contacts,
)
from models.deals import create_deal, find_stage, first_open_stage, move_deal_to_stage, parse_money
from models.domains import check_company_domain, company_name_from_domain, normalize_domain
from models.errors import DomainError
from models.money import DEFAULT_CURRENCY, normalize_currency
from models.schema import (
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealStatus,
    Pipeline,
    User,
)

EXIT_OK, EXIT_BAD_ROWS, EXIT_BAD_FILE = 0, 1, 2
CHUNK_ROWS = 1000

CONTACT_COLUMNS = (
    "name", "first_name", "last_name", "email", "phone", "title", "company", "company_domain", "owner",
    "lead_source",
)  # fmt: skip
DEAL_COLUMNS = (
    "title", "value", "currency", "pipeline", "stage", "company", "contacts", "owner", "expected_close",
    "lost_reason",
)  # fmt: skip

# Column widths in models.schema: a longer value would be cut by SQLite and refused by PostgreSQL.
_MAX_LENGTH = {"name": 300, "title": 200, "phone": 64, "lead_source": 100, "company": 300}
_MAX_DEAL_LENGTH = {"title": 300, "company": 300, "lost_reason": 500}


class FileError(Exception):
    """The file cannot be imported at all; one line for the user, exit 2."""


class RowError(Exception):
    """One row cannot be imported; its reason is reported with the line number and the row is skipped."""


@dataclass
class Row:
    line: int
    values: dict[str, str]

    def get(self, column: str) -> str:
        return self.values.get(column, "").strip()


@dataclass
class Summary:
    created: int = 0
    updated: int = 0
    skipped: int = 0


# ---- reading the file --------------------------------------------------------------------------------------


def read_rows(
    path: Path, known: Sequence[str], required: Sequence[str], warn: Callable[[str], None]
) -> list[Row]:
    """The data rows of a CSV file, each with the physical line it starts on (the header is line 1)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
    except csv.Error as exc:
        raise FileError(f"{path}:{reader.line_num}: the header line is not valid CSV: {exc}") from None
    if header is None:
        raise FileError(f"{path}: the file is empty; its first line must name the columns")
    columns = [cell.strip().lower().replace(" ", "_") for cell in header]
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        raise FileError(f"{path}: column {duplicated[0]!r} appears twice in the header")
    missing = [c for c in required if c not in columns]
    if missing:
        raise FileError(
            f"{path}: the header has no {missing[0]!r} column "
            f"(found: {', '.join(c for c in columns if c) or 'none'})"
        )
    unknown = [c for c in columns if c and c not in known]
    if unknown:
        warn(f"{path}: ignoring unknown column{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    rows: list[Row] = []
    previous_end = reader.line_num
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FileError(f"{path}:{previous_end + 1}: not valid CSV: {exc}") from None
        start, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        values = {name: cell for name, cell in zip(columns, cells, strict=False) if name in known}
        if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns) :]):
            values["__extra__"] = "yes"
        rows.append(Row(start, values))
    return rows


# ---- reporting ---------------------------------------------------------------------------------------------


class _Reporter:
    """Bad-row lines on stderr, and a progress bar there too when stderr is a terminal."""

    def __init__(self, path: Path, err: TextIO) -> None:
        self.path = path
        self.err = err
        self.progress: Progress | None = None

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.err)

    def bad_row(self, row: Row, reason: str) -> None:
        self.line(f"{self.path}:{row.line}: skipped: {reason}")

    @contextmanager
    def tracking(self, total: int, what: str) -> Iterator[Callable[[int], None]]:
        if not self.err.isatty() or total == 0:
            yield lambda _n: None
            return
        progress = Progress(
            TextColumn(f"importing {what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(file=self.err), transient=True,
        )  # fmt: skip
        task = progress.add_task(what, total=total)
        self.progress = progress
        with progress:
            yield lambda n: progress.advance(task, n)
        self.progress = None


def _run_import(
    kind: str,
    path: Path,
    out: TextIO | None,
    err: TextIO | None,
    body: Callable[[_Reporter, Summary], None],
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    reporter = _Reporter(path, err)
    summary = Summary()
    try:
        body(reporter, summary)
    except FileError as exc:
        print(f"threadline: {exc}", file=err)
        return EXIT_BAD_FILE
    print(
        f"{path}: {kind}: {summary.created} created, {summary.updated} updated, {summary.skipped} skipped",
        file=out,
    )
    if summary.skipped:
        print(
            f"threadline: {summary.skipped} bad row(s) skipped (listed above); the good rows were imported",
            file=err,
        )
        return EXIT_BAD_ROWS
    return EXIT_OK


def _begin_write(session: Session) -> None:
    # SQLite: take the write lock up front (see models.db), so a concurrent writer waits instead of failing
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={"sqlite_immediate": True})


def _chunks(rows: Sequence[Row], size: int) -> Iterator[Sequence[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _check_lengths(row: Row, limits: dict[str, int]) -> None:
    if "__extra__" in row.values:
        raise RowError("more cells than the header has columns (a missing quote?)")
    for column, limit in limits.items():
        if len(row.get(column)) > limit:
            raise RowError(f"{column} is longer than {limit} characters")


def _users_by_email(session: Session) -> dict[str, int]:
    return {email.lower(): user_id for user_id, email in session.execute(select(User.id, User.email))}


def _owner(row: Row, users: dict[str, int]) -> int | None:
    text = row.get("owner")
    if not text:
        return None
    user_id = users.get(text.lower())
    if user_id is None:
        raise RowError(f"owner {text!r} is not a Threadline user (add them with `threadline user add`)")
    return user_id


# ---- contacts ----------------------------------------------------------------------------------------------


@dataclass
class _ContactMaps:
    """Everything a row is checked against, loaded once: address -> contact, domain/name -> company, users.

    Records created by the chunk being planned carry a temporary negative id until the chunk is written.
    """

    email_owner: dict[str, int] = field(default_factory=dict)
    company_by_domain: dict[str, int] = field(default_factory=dict)
    company_by_name: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> _ContactMaps:
        maps = cls(users=_users_by_email(session))
        for email, contact_id in session.execute(select(ContactEmail.email, ContactEmail.contact_id)):
            maps.email_owner[email] = contact_id
        for domain, company_id in session.execute(select(CompanyDomain.domain, CompanyDomain.company_id)):
            maps.company_by_domain[domain] = company_id
        for company_id, name in session.execute(select(Company.id, Company.name).order_by(Company.id.desc())):
            maps.company_by_name[name.strip().lower()] = company_id  # descending: the oldest one wins
        return maps


@dataclass
class _ContactChunk:
    """The rows a chunk inserts and updates, planned in memory before anything is written."""

    now: datetime
    companies: list[dict[str, Any]] = field(default_factory=list)
    domains: list[dict[str, Any]] = field(default_factory=list)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    emails: list[dict[str, Any]] = field(default_factory=list)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    temporary: list[tuple[dict[str, int], str]] = field(default_factory=list)
    last_temporary_id: int = 0

    def temporary_id(self) -> int:
        self.last_temporary_id -= 1
        return self.last_temporary_id

    def remember(self, mapping: dict[str, int], key: str, record_id: int) -> None:
        mapping[key] = record_id
        if record_id < 0:
            self.temporary.append((mapping, key))


def import_contacts(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    now: datetime,
    out: TextIO | None = None,
    err: TextIO | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Create or update contacts (matched by email) from a CSV file; returns the exit code."""

    def body(reporter: _Reporter, summary: Summary) -> None:
        rows = read_rows(path, CONTACT_COLUMNS, ("email",), reporter.line)
        with sessions() as session, reporter.tracking(len(rows), "contacts") as advance:
            maps = _ContactMaps.load(session)
            session.commit()
            for chunk in _chunks(rows, chunk_rows):
                plan = _ContactChunk(now)
                for row in chunk:
                    try:
                        created = _plan_contact(row, maps, plan)
                    except RowError as exc:
                        reporter.bad_row(row, str(exc))
                        summary.skipped += 1
                        continue
                    if created:
                        summary.created += 1
                    else:
                        summary.updated += 1
                _write_contact_chunk(session, plan, chunk, reporter)
                advance(len(chunk))

    return _run_import("contacts", path, out, err, body)


def _plan_contact(row: Row, maps: _ContactMaps, plan: _ContactChunk) -> bool:
    """Check one row and add its writes to the chunk's plan; True when it creates a contact."""
    _check_lengths(row, _MAX_LENGTH)
    emails: list[str] = []
    for part in row.get("email").split(";"):
        if not part.strip():
            continue
        address = normalize_email(part)
        if address is None:
            raise RowError(f"{part.strip()!r} is not an email address")
        if len(address) > 320:
            raise RowError(f"{part.strip()[:40]!r}... is longer than 320 characters")
        if address not in emails:
            emails.append(address)
    if not emails:
        raise RowError("no email address (the email column is empty)")
    owners = sorted({maps.email_owner[e] for e in emails if e in maps.email_owner})
    if len(owners) > 1:
        described = ", ".join(f"contact #{o}" if o > 0 else "a contact from an earlier line" for o in owners)
        raise RowError(f"the addresses {'; '.join(emails)} belong to different contacts ({described})")
    name = row.get("name") or " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
    if len(name) > _MAX_LENGTH["name"]:
        raise RowError(f"name is longer than {_MAX_LENGTH['name']} characters")
    owner_id = _owner(row, maps.users)
    company_id = _plan_company(row, maps, plan)  # the last check: it only writes into the plan when it passes

    # a cell left empty keeps what the contact has: a partial file never wipes data
    values: dict[str, Any] = {c: row.get(c) for c in ("title", "phone", "lead_source") if row.get(c)}
    if name:
        values["name"] = name
    if owner_id is not None:
        values["owner_id"] = owner_id
    if company_id is not None:
        values["company_id"] = company_id
    if owners:
        contact_id = owners[0]
        if contact_id < 0:
            plan.contacts[contact_id].update(values)
        else:
            plan.updates.setdefault(contact_id, {"id": contact_id}).update(values)
    else:
        contact_id = plan.temporary_id()
        plan.contacts[contact_id] = {
            "id": contact_id, "name": display_name_from_email(emails[0]), "title": None, "phone": None,
            "company_id": None, "owner_id": None, "lead_source": None, "created_at": plan.now,
            "last_activity_at": None, **values,
        }  # fmt: skip
    for email in emails:
        if email not in maps.email_owner:
            plan.emails.append({"contact_id": contact_id, "email": email})
            plan.remember(maps.email_owner, email, contact_id)
    return not owners


def _plan_company(row: Row, maps: _ContactMaps, plan: _ContactChunk) -> int | None:
    """The company a contact row names: by domain, else by name, else a new one (with the domain)."""
    name = row.get("company")
    domain_text = row.get("company_domain")
    try:
        domain = check_company_domain(domain_text) if domain_text else ""
    except DomainError as exc:
        raise RowError(f"company_domain: {exc}") from None
    if domain and domain in maps.company_by_domain:
        return maps.company_by_domain[domain]
    if name and name.lower() in maps.company_by_name:
        company_id = maps.company_by_name[name.lower()]
        if domain:
            # known by name, new domain: adding it makes the sync file this domain's mail on the company
            plan.domains.append({"company_id": company_id, "domain": domain})
            plan.remember(maps.company_by_domain, domain, company_id)
        return company_id
    if not name and not domain:
        return None
    company_id = plan.temporary_id()
    name = name or company_name_from_domain(domain)
    plan.companies.append(
        {"id": company_id, "name": name, "owner_id": None, "created_at": plan.now, "last_activity_at": None}
    )
    if domain:
        plan.domains.append({"company_id": company_id, "domain": domain})
        plan.remember(maps.company_by_domain, domain, company_id)
    if name.lower() not in maps.company_by_name:
        plan.remember(maps.company_by_name, name.lower(), company_id)
    return company_id


def _write_contact_chunk(
    session: Session, plan: _ContactChunk, chunk: Sequence[Row], reporter: _Reporter
) -> None:
    """Write a chunk's plan through models.contacts' bulk operations, in one transaction."""
    _begin_write(session)
    real: dict[int, int | None] = {}

    def resolve(record_id: int | None) -> int | None:
        return real[record_id] if record_id is not None and record_id < 0 else record_id

    domains_of: dict[int, list[str]] = {}
    for item in plan.domains:
        domains_of.setdefault(item["company_id"], []).append(item["domain"])
    emails_of: dict[int, list[str]] = {}
    for item in plan.emails:
        emails_of.setdefault(item["contact_id"], []).append(item["email"])
    try:
        companies = create_companies(
            session,
            [
                CompanyToCreate(c["name"], tuple(domains_of.get(c["id"], ())), c["owner_id"])
                for c in plan.companies
            ],
            now=plan.now,
        )
        real.update(zip((c["id"] for c in plan.companies), companies.ids, strict=True))
        taken = {**companies.taken}
        taken.update(
            add_company_domains(session, {d: i for i, ds in domains_of.items() if i > 0 for d in ds})
        )
        people = list(plan.contacts.values())
        contacts = create_contacts(
            session,
            [
                ContactToCreate(
                    name=c["name"],
                    emails=tuple(emails_of.get(c["id"], ())),
                    company_id=resolve(c["company_id"]),
                    owner_id=c["owner_id"],
                    title=c["title"],
                    phone=c["phone"],
                    lead_source=c["lead_source"],
                )
                for c in people
            ],
            now=plan.now,
        )
        real.update(zip((c["id"] for c in people), contacts.ids, strict=True))
        taken.update(contacts.taken)
        taken.update(add_contact_emails(session, {e: i for i, es in emails_of.items() if i > 0 for e in es}))
        if taken:
            raise _Raced(f"{min(taken)} was added by someone else meanwhile")
        update_contacts(
            session,
            {
                contact_id: {
                    k: resolve(v) if k == "company_id" else v for k, v in values.items() if k != "id"
                }
                for contact_id, values in plan.updates.items()
            },
        )
        session.commit()
    except (IntegrityError, _Raced) as exc:
        session.rollback()
        detail = str(exc.orig).splitlines()[0] if isinstance(exc, IntegrityError) else str(exc)
        raise FileError(
            f"{reporter.path}:{chunk[0].line}-{chunk[-1].line}: the database changed during the import "
            f"({detail}); the lines before {chunk[0].line} were imported: run the import again"
        ) from None
    # later chunks see this chunk's records by their real ids
    for mapping, key in plan.temporary:
        if mapping[key] < 0:
            mapping[key] = real[mapping[key]] or 0


class _Raced(Exception):
    """A concurrent writer took an address or a domain this chunk was about to claim."""


# ---- deals -------------------------------------------------------------------------------------------------


DealKey = tuple[str, int | None, int]  # lowercase title, company id, pipeline id


@dataclass
class _DealMaps:
    pipelines: dict[str, Pipeline]
    default: Pipeline | None
    users: dict[str, int]
    email_owner: dict[str, int]
    company_by_name: dict[str, int]
    company_by_domain: dict[str, int]
    deals: dict[DealKey, list[int]]

    @classmethod
    def load(cls, session: Session) -> _DealMaps:
        pipelines = list(session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)))
        for pipeline in pipelines:
            _ = pipeline.stages  # loaded now: the maps outlive the transaction
        by_name: dict[str, int] = {}
        for known_id, name in session.execute(select(Company.id, Company.name).order_by(Company.id.desc())):
            by_name[name.strip().lower()] = known_id
        deals: dict[DealKey, list[int]] = {}
        rows = session.execute(
            select(Deal.id, Deal.title, Deal.company_id, Deal.pipeline_id).order_by(Deal.id)
        )
        for deal_id, title, company_id, pipeline_id in rows:
            deals.setdefault((title.strip().lower(), company_id, pipeline_id), []).append(deal_id)
        return cls(
            pipelines={p.name.lower(): p for p in pipelines},
            default=pipelines[0] if pipelines else None,
            users=_users_by_email(session),
            email_owner={
                k: v for k, v in session.execute(select(ContactEmail.email, ContactEmail.contact_id))
            },
            company_by_name=by_name,
            company_by_domain={
                k: v for k, v in session.execute(select(CompanyDomain.domain, CompanyDomain.company_id))
            },
            deals=deals,
        )


def import_deals(
    sessions: sessionmaker[Session],
    path: Path,
    *,
    now: datetime,
    out: TextIO | None = None,
    err: TextIO | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Create or update deals from a CSV file (same title, company and pipeline: same deal); the exit code."""

    def body(reporter: _Reporter, summary: Summary) -> None:
        rows = read_rows(path, DEAL_COLUMNS, ("title",), reporter.line)
        with sessions() as session, reporter.tracking(len(rows), "deals") as advance:
            maps = _DealMaps.load(session)
            session.commit()
            for chunk in _chunks(rows, chunk_rows):
                _begin_write(session)
                for row in chunk:
                    try:
                        with session.begin_nested():
                            created = _import_deal(session, row, maps, now)
                    except (RowError, DomainError) as exc:
                        reporter.bad_row(row, str(exc))
                        summary.skipped += 1
                        continue
                    if created:
                        summary.created += 1
                    else:
                        summary.updated += 1
                session.commit()
                advance(len(chunk))

    return _run_import("deals", path, out, err, body)


def _import_deal(session: Session, row: Row, maps: _DealMaps, now: datetime) -> bool:
    """Apply one row; True when it created a deal, False when it updated one.

    Everything is checked before anything is written, and the maps are updated only once the row is written,
    so a bad row leaves no trace (the caller also wraps each row in a savepoint).
    """
    _check_lengths(row, _MAX_DEAL_LENGTH)
    title = row.get("title")
    if not title:
        raise RowError("no title")
    pipeline = _deal_pipeline(row, maps)
    stage_name = row.get("stage")
    stage = find_stage(pipeline, stage_name) if stage_name else None
    if stage_name and stage is None:
        known = ", ".join(s.name for s in pipeline.stages)
        raise RowError(f"no stage named {stage_name!r} in pipeline {pipeline.name!r} (known: {known})")
    value = parse_money(row.get("value")) if row.get("value") else None
    currency = normalize_currency(row.get("currency")) if row.get("currency") else None
    expected_close = _parse_date(row.get("expected_close"))
    owner_id = _owner(row, maps.users)
    contact_ids = _deal_contact_ids(row, maps)
    company_text = row.get("company")
    company_id = _find_deal_company(company_text, maps)
    lost_reason = row.get("lost_reason") or None
    matches = (
        maps.deals.get((title.lower(), company_id, pipeline.id), []) if company_id or not company_text else []
    )
    if len(matches) > 1:
        raise RowError(
            f"{len(matches)} deals are titled {title!r} for this company and pipeline: rename one first"
        )

    owner = session.get(User, owner_id) if owner_id is not None else None
    contacts = [c for c in (session.get(Contact, i) for i in contact_ids) if c is not None]
    if company_text and company_id is None:
        company: Company | None = Company(name=company_text, created_at=now)
        session.add(company)
    else:
        company = session.get(Company, company_id) if company_id is not None else None
    if matches:
        deal = session.get(Deal, matches[0])
        if deal is None:
            raise RowError(f"deal #{matches[0]} was deleted during the import")
        if stage is not None:
            move_deal_to_stage(session, deal, stage, now=now, lost_reason=lost_reason)
        elif lost_reason and deal.status == DealStatus.LOST:
            deal.lost_reason = lost_reason
        if value is not None:
            deal.value = value
        if currency is not None:
            deal.currency = currency
        if owner is not None:
            deal.owner = owner
        if expected_close is not None:
            deal.expected_close_on = expected_close
        for contact in contacts:
            if contact not in deal.contacts:
                deal.contacts.append(contact)
        session.flush()
        return False
    deal = create_deal(
        session, title=title, now=now, pipeline=pipeline, stage=stage or first_open_stage(pipeline),
        value=value or Decimal("0"), currency=currency or DEFAULT_CURRENCY, company=company,
        contacts=contacts, owner=owner, expected_close_on=expected_close,
    )  # fmt: skip
    if lost_reason and deal.status == DealStatus.LOST:
        deal.lost_reason = lost_reason
    session.flush()
    if company is not None and company_id is None:
        maps.company_by_name[company.name.lower()] = company.id
    maps.deals[(title.lower(), deal.company_id, pipeline.id)] = [deal.id]
    return True


def _deal_pipeline(row: Row, maps: _DealMaps) -> Pipeline:
    name = row.get("pipeline")
    if not name:
        if maps.default is None:
            raise RowError("no pipeline exists yet: run `threadline db upgrade`")
        return maps.default
    pipeline = maps.pipelines.get(name.lower())
    if pipeline is None:
        known = ", ".join(p.name for p in maps.pipelines.values())
        raise RowError(f"no pipeline named {name!r} (known: {known})")
    return pipeline


def _deal_contact_ids(row: Row, maps: _DealMaps) -> list[int]:
    contact_ids: list[int] = []
    for part in row.get("contacts").split(";"):
        if not part.strip():
            continue
        address = normalize_email(part)
        if address is None:
            raise RowError(f"contacts: {part.strip()!r} is not an email address")
        contact_id = maps.email_owner.get(address)
        if contact_id is None:
            raise RowError(f"contacts: no contact has the address {address} (import contacts first)")
        if contact_id not in contact_ids:
            contact_ids.append(contact_id)
    return contact_ids


def _find_deal_company(text: str, maps: _DealMaps) -> int | None:
    """The company a deal row names: by name, else by domain (None: unknown, or no company given)."""
    if not text:
        return None
    return maps.company_by_name.get(text.lower()) or maps.company_by_domain.get(normalize_domain(text))


def _parse_date(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RowError(f"expected_close {text!r} is not a date like 2026-03-31") from None
