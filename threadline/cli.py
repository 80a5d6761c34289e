"""The `threadline` command: the one place that wires configuration, models, the daemon and the admin panel.

Exit status: 0 when the operation worked, 1 when it failed, 2 for a usage or configuration mistake. Users'
mistakes are reported in one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from models import migrate
from models.db import make_engine, make_sessionmaker, transaction
from models.errors import DomainError
from threadline.config import ConfigError, Settings, find_config_file, load_settings
from threadline.logs import configure_logging

log = logging.getLogger("threadline")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """The operation failed for a reason the user can act on; printed as one line, exit 1."""


class UsageError(Exception):
    """The command was called wrongly; printed as one line, exit 2."""


@dataclass
class Context:
    """What every command gets: the settings, and the database opened lazily."""

    settings: Settings
    args: argparse.Namespace
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database.url, echo=self.settings.database.echo)
        return self._engine

    def sessions(self, *, require_schema: bool = True) -> sessionmaker[Session]:
        if require_schema:
            self.require_schema()
        return make_sessionmaker(self.engine)

    def require_schema(self) -> None:
        try:
            up_to_date = migrate.is_up_to_date(self.engine)
        except OperationalError as exc:
            raise CommandError(f"cannot open the database {self.safe_url}: {_first_line(exc)}") from None
        if not up_to_date:
            raise CommandError(
                f"the database {self.safe_url} is not migrated to this version: run `threadline db upgrade`"
            )

    @property
    def safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.settings.database.url).render_as_string(hide_password=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def now() -> datetime:
    return datetime.now(UTC)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# ---- commands -------------------------------------------------------------------------------------------


def cmd_db_upgrade(ctx: Context) -> int:
    try:
        before = migrate.current_revision(ctx.engine)
        migrate.upgrade(ctx.engine)
        after = migrate.current_revision(ctx.engine)
    except OperationalError as exc:
        raise CommandError(f"cannot open the database {ctx.safe_url}: {_first_line(exc)}") from None
    if before == after:
        print(f"database {ctx.safe_url} is up to date (revision {after})")
    else:
        print(f"database {ctx.safe_url} upgraded from {before or 'empty'} to revision {after}")
    return EXIT_OK


def cmd_db_downgrade(ctx: Context) -> int:
    migrate.downgrade(ctx.engine, ctx.args.revision)
    print(f"database {ctx.safe_url} downgraded to {migrate.current_revision(ctx.engine) or 'empty'}")
    return EXIT_OK


def cmd_db_status(ctx: Context) -> int:
    current = migrate.current_revision(ctx.engine)
    head = migrate.head_revision(ctx.engine)
    state = "up to date" if current == head else "needs `threadline db upgrade`"
    print(f"database {ctx.safe_url}: revision {current or 'empty'} (latest {head}): {state}")
    return EXIT_OK if current == head else EXIT_FAILED


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask for a password: pass --password-stdin and pipe it in")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CommandError("the two passwords differ")
    if not password:
        raise CommandError("empty password")
    return password


def cmd_user_add(ctx: Context) -> int:
    from models.users import create_user

    password = _read_password(ctx.args)
    with transaction(ctx.sessions()) as session:
        user = create_user(
            session, ctx.args.email, name=ctx.args.name, role=ctx.args.role, password=password, now=now()
        )
        print(f"user {user.email} ({user.role.value}) created")
    return EXIT_OK


def cmd_import_contacts(ctx: Context) -> int:
    from threadline.importer import import_contacts

    return import_contacts(ctx.sessions(), Path(ctx.args.file), now=now())


def cmd_import_deals(ctx: Context) -> int:
    from threadline.importer import import_deals

    return import_deals(ctx.sessions(), Path(ctx.args.file), now=now())


def cmd_export(ctx: Context) -> int:
    from threadline.exporter import export

    export(ctx.sessions(), ctx.args.what, ctx.args.format, sys.stdout)
    return EXIT_OK


def cmd_demo(ctx: Context) -> int:
    from threadline.demo import seed_demo

    seed_demo(ctx.sessions(), now=now(), out=sys.stdout, only_if_empty=ctx.args.if_empty)
    return EXIT_OK


# ---- parser ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"threadline: error: {message}\n")


Handler = Callable[[Context], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="threadline", description="Threadline: the CRM that fills itself from your inboxes.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $THREADLINE_CONFIG or ./threadline.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(parent: argparse._SubParsersAction[_Parser], name: str, handler: Handler, help_: str) -> _Parser:
        sub = parent.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db_command", metavar="ACTION")
    db.required = True
    add(db, "upgrade", cmd_db_upgrade, "create or migrate the schema to this version")
    add(db, "status", cmd_db_status, "show whether the schema is up to date")
    down = add(db, "downgrade", cmd_db_downgrade, "migrate the schema back (for rolling back an upgrade)")
    down.add_argument("revision", help="target revision, or 'base' to drop everything")

    user = commands.add_parser("user", help="staff accounts").add_subparsers(dest="user_command", metavar="ACTION")
    user.required = True
    user_add = add(user, "add", cmd_user_add, "add a staff member")
    user_add.add_argument("email")
    user_add.add_argument("--name", required=True)
    user_add.add_argument("--role", required=True, choices=["admin", "manager", "rep"])
    user_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    imports = commands.add_parser("import", help="bring data in").add_subparsers(dest="import_command", metavar="WHAT")
    imports.required = True
    add(imports, "contacts", cmd_import_contacts, "import or update contacts from a CSV file").add_argument("file")
    add(imports, "deals", cmd_import_deals, "import deals from a CSV file").add_argument("file")

    export = add(commands, "export", cmd_export, "write records to stdout as JSON lines or CSV")
    export.add_argument("what", choices=["contacts", "companies", "deals", "activities", "quarantine"])
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    demo = add(commands, "demo", cmd_demo, "seed a realistic demo dataset and print the demo logins")
    demo.add_argument("--if-empty", action="store_true", help="do nothing when the database already has deals")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(find_config_file(args.config))
    except ConfigError as exc:
        print(f"threadline: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.logging.level)
    ctx = Context(settings=settings, args=args)
    try:
        return int(args.handler(ctx))
    except UsageError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"threadline: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, DomainError) as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OperationalError, ProgrammingError) as exc:
        print(f"threadline: database error on {ctx.safe_url}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("threadline: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    finally:
        ctx.close()


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
