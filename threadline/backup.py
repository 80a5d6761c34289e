"""`threadline backup FILE` and `threadline restore FILE`: the whole database in one file, and back.

SQLite is copied with its online backup API (a consistent copy while the daemon and the panel keep
writing); the copy is a plain SQLite file in rollback-journal mode, checked with `PRAGMA quick_check`.
PostgreSQL is dumped with `pg_dump --format=custom` (a consistent snapshot) and restored with `pg_restore`,
both run with the connection's password in their environment, never on a command line. A backup is written
to a temporary file beside FILE (mode 0600: it holds every record of the CRM) and renamed into place only
when complete, so a failed or interrupted backup never leaves a truncated file under FILE's name.

What a backup never holds: anything from the configuration file or the environment. Mailbox and SMTP
passwords, the panel's session key, the metrics token and the key that encrypts stored secrets all live
outside the database by design, so they must be kept (and backed up) separately; a backup restored without
the encryption key cannot decrypt what was encrypted with it.

A restore refuses to replace a database that already holds data unless asked to (`--force`), refuses a backup
made by a newer Threadline (its schema revision is unknown here), and reports afterwards whether the restored
schema needs `threadline db upgrade`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from models import migrate
from models.db import make_engine

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
# tables a freshly migrated database fills by itself: rows there are not the team's data
_SEED_TABLES = frozenset({"alembic_version", "pipelines", "stages"})
# where Debian installs each PostgreSQL version's client tools side by side
DEBIAN_VERSIONS = Path("/usr/lib/postgresql")
# what the restore summary counts
_SUMMARY_TABLES = ("users", "contacts", "companies", "deals", "activities")


class BackupError(Exception):
    """The backup or restore failed for a reason the user can act on; the message is one line."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    kind: str  # "sqlite" or "postgresql"
    size: int
    revision: str | None
    seconds: float

    def summary(self) -> str:
        return (
            f"backup of the {self.kind} database written to {self.path} "
            f"({_size(self.size)}, schema revision {self.revision}) in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class RestoreResult:
    kind: str
    revision: str | None
    counts: Mapping[str, int]
    schema: migrate.SchemaStatus
    seconds: float

    def summary(self) -> str:
        counts = ", ".join(f"{n:,} {table}" for table, n in self.counts.items())
        return (
            f"restored the {self.kind} database (schema revision {self.revision}): {counts} "
            f"in {self.seconds:.1f} s"
        )


# ---- backup -----------------------------------------------------------------------------------------------


def backup(url: str, target: Path) -> BackupResult:
    """Write a consistent copy of the database at `url` to `target`."""
    started = time.monotonic()
    parsed = make_url(url)
    _check_writable(target)
    with _partial_file(target) as partial:
        if parsed.get_backend_name() == "sqlite":
            kind = "sqlite"
            source = _sqlite_path(parsed)
            if source.resolve() == target.resolve():
                raise BackupError(f"{target} is the database itself: choose another file for the backup")
            revision = _backup_sqlite(source, partial)
        else:
            kind = "postgresql"
            revision = _backup_postgres(parsed, partial)
        size = partial.stat().st_size
    return BackupResult(target, kind, size, revision, time.monotonic() - started)


def _check_writable(target: Path) -> None:
    if target.is_dir():
        raise BackupError(f"{target} is a directory: give the backup a file name")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise BackupError(f"cannot write {target}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise BackupError(f"cannot write {target}: permission denied")


@contextlib.contextmanager
def _partial_file(target: Path) -> Iterator[Path]:
    """A private (0600) temporary file beside `target`, renamed over it only if the block succeeds."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None
    os.close(fd)
    try:
        yield partial
        os.replace(partial, target)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


@contextlib.contextmanager
def _database(url: URL) -> Iterator[Engine]:
    """An engine on the URL, disposed afterwards; a database error becomes one line naming the database."""
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        yield engine
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot open the database {_safe(url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _sqlite_path(url: URL) -> Path:
    database = url.database or ""
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(database).expanduser()


def _backup_sqlite(source: Path, partial: Path) -> str | None:
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    try:
        with contextlib.closing(sqlite3.connect(source, timeout=30)) as src:
            revision = _sqlite_revision(src)
            if revision is None:
                raise BackupError(f"the database {source} is empty (never migrated): nothing to back up")
            with contextlib.closing(sqlite3.connect(partial)) as dst:
                src.backup(dst)
                # one self-contained file: no -wal beside it to lose when the backup is copied elsewhere
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from None
    if not check or check[0] != "ok":
        raise BackupError(f"the copy of {source} failed its integrity check: {check}")
    return revision


def _sqlite_revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: never migrated
        return None
    return str(row[0]) if row else None


def _backup_postgres(url: URL, partial: Path) -> str | None:
    with _database(url) as engine:
        server_major = _server_major(engine)
        revision = migrate.current_revision(engine)
    if revision is None:
        raise BackupError(f"the database {_safe(url)} is empty (never migrated): nothing to back up")
    pg_dump = pg_tool("pg_dump", server_major)
    _run_pg(
        [str(pg_dump), "--format=custom", "--no-password", f"--file={partial}", f"--dbname={_conninfo(url)}"],
        url,
    )
    if not partial.stat().st_size:
        raise BackupError(f"{pg_dump} wrote nothing")
    return revision


# ---- restore ----------------------------------------------------------------------------------------------


def restore(url: str, source: Path, *, force: bool) -> RestoreResult:
    """Replace the database at `url` with the backup in `source`."""
    started = time.monotonic()
    parsed = make_url(url)
    kind = backup_kind(source)
    wanted = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
    if kind != wanted:
        raise BackupError(
            f"{source} is a {kind} backup and the configured database is {wanted}: a backup is restored into "
            f"the kind of database it came from (to move between them, use export and import)"
        )
    with _database(parsed) as engine:
        if kind == "sqlite":
            revision = _restore_sqlite(engine, parsed, source, force=force)
        else:
            revision = _restore_postgres(engine, parsed, source, force=force)
        engine.dispose()  # new connections see the restored database
        counts = _counts(engine)
        schema = migrate.schema_status(engine)
    return RestoreResult(kind, revision, counts, schema, time.monotonic() - started)


def backup_kind(source: Path) -> str:
    """'sqlite' or 'postgresql', from the file's first bytes."""
    try:
        with source.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"{source}: no such file") from None
    except OSError as exc:
        raise BackupError(f"cannot read {source}: {exc.strerror}") from None
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_CUSTOM_MAGIC):
        return "postgresql"
    raise BackupError(
        f"{source} is not a Threadline backup (neither a SQLite file nor a pg_dump custom archive)"
    )


def _check_revision(source: Path, revision: str | None, engine: Engine) -> None:
    if revision is None:
        raise BackupError(f"{source} holds no Threadline schema (no alembic_version): refusing to restore it")
    if revision not in migrate.known_revisions(engine):
        raise BackupError(
            f"{source} was made by a newer Threadline (schema revision {revision}): "
            "restore it with that version or a later one"
        )


def _refuse_if_holding_data(engine: Engine, url: URL, *, force: bool) -> None:
    if force:
        return
    held = {table: n for table, n in _counts(engine, every_table=True).items() if n}
    if held:
        listed = ", ".join(f"{n:,} {table}" for table, n in sorted(held.items())[:5])
        raise BackupError(
            f"the database {_safe(url)} already holds data ({listed}): a restore replaces all of it; "
            "add --force to do that"
        )


def _counts(engine: Engine, *, every_table: bool = False) -> dict[str, int]:
    """Rows per table (the summary's tables, or every table holding the team's data)."""
    tables = set(inspect(engine).get_table_names())
    names = sorted(tables - _SEED_TABLES) if every_table else [t for t in _SUMMARY_TABLES if t in tables]
    with engine.connect() as conn:
        return {
            name: int(conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar() or 0) for name in names
        }


def _restore_sqlite(engine: Engine, url: URL, source: Path, *, force: bool) -> str | None:
    target = _sqlite_path(url)
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{source} is the configured database itself")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src:
            check = src.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                found = check[0] if check else "no answer"
                raise BackupError(f"{source} is damaged (integrity check: {found})")
            revision = _sqlite_revision(src)
            _check_revision(source, revision, engine)
            if target.exists():
                _refuse_if_holding_data(engine, url, force=force)
            engine.dispose()
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(target, timeout=30)) as dst:
                # the backup API replaces every page of the target under its write lock, -wal included
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore {source} into {target}: {exc}") from None
    return revision


def _restore_postgres(engine: Engine, url: URL, source: Path, *, force: bool) -> str | None:
    server_major = _server_major(engine)
    pg_restore = pg_tool("pg_restore", server_major)
    listing = _run_pg([str(pg_restore), "--list", str(source)], url)
    revision = _archived_revision(pg_restore, source, url)
    _check_revision(source, revision, engine)
    _refuse_if_holding_data(engine, url, force=force)
    # Tables the backup does not have (a newer schema's) would survive the restore and confuse the next
    # upgrade: drop them first. Everything the backup has is dropped and recreated by pg_restore --clean in
    # its single transaction, so a failing restore leaves the database as it was.
    archived = set(re.findall(r"^\d+; \d+ \d+ TABLE \S+ (\S+) ", listing, flags=re.MULTILINE))
    extra = sorted(set(inspect(engine).get_table_names()) - archived)
    if extra:
        with engine.begin() as conn:
            for table in extra:
                conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
    engine.dispose()
    _run_pg(
        [
            str(pg_restore),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            f"--dbname={_conninfo(url)}",
            str(source),
        ],
        url,
    )
    return revision


def _archived_revision(pg_restore: Path, source: Path, url: URL) -> str | None:
    """The schema revision stored in a custom-format archive, read without restoring anything."""
    script = _run_pg(
        [str(pg_restore), "--data-only", "--table=alembic_version", "--file=-", str(source)], url
    )
    lines = iter(script.splitlines())
    for line in lines:
        if line.startswith("COPY ") and "alembic_version" in line:
            value = next(lines, "\\.")
            return None if value == "\\." else value.strip()
    return None


# ---- PostgreSQL client tools ------------------------------------------------------------------------------


def _server_major(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000


def pg_tool(
    name: str, server_major: int, *, search_path: str | None = None, versions_dir: Path = DEBIAN_VERSIONS
) -> Path:
    """pg_dump or pg_restore of the server's major version or newer (Debian keeps each version apart).

    Looks in Debian's per-version directory for the server's version first, then on the PATH, then at
    every other installed version, newest first.
    """
    candidates: list[Path] = []
    exact = versions_dir / str(server_major) / "bin" / name
    if exact.is_file():
        candidates.append(exact)
    found = shutil.which(name, path=search_path)
    if found:
        candidates.append(Path(found))
    if versions_dir.is_dir():
        candidates.extend(sorted(versions_dir.glob(f"*/bin/{name}"), key=_dir_major, reverse=True))
    package = f"postgresql-client-{server_major}"
    if not candidates:
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL {server_major} client tools "
            f"(Debian: apt install {package})"
        )
    best: tuple[int, Path] | None = None
    for candidate in candidates:
        major = _tool_major(candidate)
        if major is not None and major >= server_major:
            return candidate
        if major is not None and (best is None or major > best[0]):
            best = (major, candidate)
    have = f"{best[1]} is version {best[0]}" if best else f"{candidates[0]} does not say its version"
    raise BackupError(
        f"{name} must be version {server_major} or newer for this PostgreSQL {server_major} server, but "
        f"{have}: install the matching client tools (Debian: apt install {package})"
    )


def _dir_major(path: Path) -> int:
    name = path.parent.parent.name
    return int(name) if name.isdigit() else 0


def _tool_major(path: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found.group(1)) if found else None


def _conninfo(url: URL) -> str:
    """A libpq connection string for the URL, without its password (that goes in PGPASSWORD)."""
    keywords: dict[str, str] = {}
    parts = (("host", url.host), ("port", url.port), ("user", url.username), ("dbname", url.database))
    for key, value in parts:
        if value not in (None, ""):
            keywords[key] = str(value)
    for key, option in url.query.items():
        keywords[key] = option if isinstance(option, str) else option[-1]
    return " ".join(f"{key}={_quote(value)}" for key, value in keywords.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _run_pg(command: list[str], url: URL) -> str:
    env = {**os.environ, "PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "30")}
    env.pop("PGPASSWORD", None)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise BackupError(f"cannot run {command[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        message = _tool_error(done.stderr, url) or f"exit status {done.returncode}"
        raise BackupError(f"{Path(command[0]).name} failed: {message}")
    return done.stdout


def _tool_error(stderr: str, url: URL) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()] or lines
    message = errors[0] if errors else ""
    if url.password:
        message = message.replace(str(url.password), "***")
    return message.removeprefix("pg_dump: ").removeprefix("pg_restore: ")


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value, unit = n / 1024, "KB"
    for bigger in ("MB", "GB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:,.1f} {unit}"
