"""The `threadline` command: the one place that wires configuration, models, the daemon and the admin panel.

Exit status: 0 when the operation worked, 1 when it failed, 2 for a usage or configuration mistake. Users'
mistakes are reported in one line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from models import migrate
from models.db import make_engine, make_sessionmaker, transaction
from models.errors import DomainError
from models.secrets import SecretBox, check_stored_secrets, secret_box
from settings import ConfigError, MailboxSettings, Settings, find_config_file, load_settings
from settings.urls import shown_url
from threadline.logs import configure_logging

if TYPE_CHECKING:
    from daemon.credentials import MailboxCredentials
    from daemon.imap import ImapSession, ImapTarget
    from daemon.matching import Team
    from daemon.relink import RelinkResult
    from daemon.service import Daemon
    from daemon.workers import ParserPool
    from models.history import HistorySelection
    from threadline.mailboxes import PanelConnector

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
        """The database's sessions; first checks the schema is current and the stored secrets readable."""
        if require_schema:
            self.require_schema()
        factory = make_sessionmaker(self.engine)
        if require_schema:
            with factory() as session:
                check_stored_secrets(session, self.box)
        return factory

    @property
    def box(self) -> SecretBox | None:
        """The encryption key for stored secrets ([secrets]), or None when none is configured."""
        return secret_box(self.settings.secrets)

    def mailboxes(
        self, sessions: sessionmaker[Session], *, include_paused: bool = False
    ) -> list[MailboxSettings]:
        """The config file's mailboxes and the database's, as the daemon sees them."""
        from models.mailboxes import effective_mailboxes

        with sessions() as session:
            return list(
                effective_mailboxes(
                    session, self.settings.mailboxes, box=self.box, include_paused=include_paused
                )
            )

    def mailbox(
        self, sessions: sessionmaker[Session], name: str, *, include_paused: bool = False
    ) -> MailboxSettings:
        for mailbox in self.mailboxes(sessions, include_paused=include_paused):
            if mailbox.name == name:
                return mailbox
        raise UsageError(f"no mailbox named {name!r} in {self.settings.source} or in the database")

    def credentials(self, sessions: sessionmaker[Session]) -> MailboxCredentials:
        from daemon.credentials import MailboxCredentials

        return MailboxCredentials(sessions, box=self.box, providers=self.settings.oauth, now_fn=now)

    def require_schema(self) -> None:
        schema = migrate.schema_status(self.engine)
        if schema.state is migrate.SchemaState.UNREACHABLE:
            raise CommandError(f"cannot open the database {self.safe_url}: {schema.detail}")
        if schema.problem is not None:
            raise CommandError(f"{self.safe_url}: {schema.problem}")

    @property
    def safe_url(self) -> str:
        return shown_url(self.settings.database.url)

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


def cmd_api_key_create(ctx: Context) -> int:
    from models.apikeys import create_api_key
    from models.users import find_user

    with transaction(ctx.sessions()) as session:
        user = find_user(session, ctx.args.user)
        if user is None:
            raise CommandError(f"no user {ctx.args.user}: add one with `threadline user add`")
        made = create_api_key(session, user, name=ctx.args.name, now=now())
        print(
            f"API key {made.key.id} {made.key.name!r} for {user.email} ({user.role.value}); shown this once:"
        )
        print(made.token)
    return EXIT_OK


def cmd_api_key_list(ctx: Context) -> int:
    from models.apikeys import list_api_keys

    with ctx.sessions()() as session:
        for key in list_api_keys(session):
            used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never used"
            state = f"revoked {key.revoked_at.isoformat(timespec='seconds')}" if key.revoked_at else "active"
            print(f"{key.id}\ttl_{key.prefix}...\t{key.user.email}\t{key.name}\t{used}\t{state}")
    return EXIT_OK


def cmd_api_key_revoke(ctx: Context) -> int:
    from models.apikeys import get_api_key, revoke_api_key

    with transaction(ctx.sessions()) as session:
        key = get_api_key(session, ctx.args.id)
        done = revoke_api_key(session, key, now=now())
        print(f"API key {key.id} {key.name!r} " + ("revoked" if done else "was already revoked"))
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

    seed_demo(
        ctx.sessions(), now=now(), out=sys.stdout, only_if_empty=ctx.args.if_empty, settings=ctx.settings
    )
    return EXIT_OK


def cmd_merge(ctx: Context) -> int:
    from models.merge import MergeKind, find_record, merge_records, plan_merge

    kind = MergeKind(ctx.args.kind.rstrip("s").replace("companie", "company"))
    with transaction(ctx.sessions()) as session:
        keep = find_record(session, kind, ctx.args.keep)
        other = find_record(session, kind, ctx.args.other)
        plan = plan_merge(session, kind, keep, other)
        print(f"Merge {kind.value} {plan.other_name} (#{plan.other_id}) into {plan.keep_name} (#{keep.id}):")
        print(f"  moves: {plan.summary().split('; ')[0]}")
        for fill in plan.fills:
            print(f"  fills {fill.label}: {fill.value}")
        if ctx.args.dry_run:
            print("Dry run: nothing changed.")
            session.rollback()
            return EXIT_OK
        merge_records(session, kind, keep.id, other.id, now=now())
    print(f"Merged: {kind.value} #{plan.other_id} now leads to #{plan.keep_id}.")
    return EXIT_OK


# ---- running it: status, backup, restore ---------------------------------------------------------------


def cmd_status(ctx: Context) -> int:
    from threadline.status import print_status, read_snapshot

    snapshot = read_snapshot(ctx.sessions(), ctx.settings, now=now())
    healthy = print_status(snapshot, ctx.settings, sys.stdout, as_json=ctx.args.json)
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_backup(ctx: Context) -> int:
    from threadline.backup import BackupError, backup

    try:
        result = backup(ctx.settings.database.url, Path(ctx.args.file))
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(result.summary())
    return EXIT_OK


def cmd_restore(ctx: Context) -> int:
    from threadline.backup import BackupError, restore

    try:
        result = restore(ctx.settings.database.url, Path(ctx.args.file), force=ctx.args.force)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    print(result.summary())
    if result.schema.problem is not None:
        print(f"threadline: restored, but {result.schema.problem}", file=sys.stderr)
    return EXIT_OK


# ---- alerts (owned by the alerts feature) ----------------------------------------------------------------


def cmd_alerts(ctx: Context) -> int:
    import json

    from daemon.alerts import run_scan

    if not ctx.args.once:
        raise UsageError(
            "alerts run on schedule inside `threadline daemon`; use `threadline alerts --once` to scan now"
        )
    result = run_scan(ctx.settings, ctx.sessions(), now=now())
    if ctx.args.json:
        print(json.dumps(result.as_dict(), sort_keys=True))
    else:
        print(f"alerts: {result.summary()}")
        for error in result.errors:
            print(f"threadline: alerts: {error}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


# ---- end of alerts -------------------------------------------------------------------------------------


# ---- admin panel (owned by the admin feature) ----------------------------------------------------------


def cmd_admin(ctx: Context) -> int:
    import signal
    import threading

    from admin.app import create_app, serve
    from threadline import systemd

    host = ctx.args.host or ctx.settings.admin.host
    port = ctx.args.port if ctx.args.port is not None else ctx.settings.admin.port
    sessions = ctx.sessions()
    app = create_app(ctx.settings, sessions, connector=_connector(ctx, sessions))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def ready(bound_host: str, bound_port: int) -> None:
        print(f"admin panel on http://{bound_host}:{bound_port}/ (Ctrl-C to stop)", flush=True)
        systemd.supervise(
            lambda: systemd.answers_healthz(bound_host, bound_port),
            stop,
            status=f"admin panel on http://{bound_host}:{bound_port}/",
        )

    try:
        serve(app, host, port, threads=ctx.settings.admin.threads, stop_event=stop, on_ready=ready)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print("admin panel stopped")
    return EXIT_OK


# ---- end of admin panel --------------------------------------------------------------------------------


# ---- email sync (owned by the sync feature) ------------------------------------------------------------


def cmd_sync(ctx: Context) -> int:
    import json
    import signal
    import threading

    from daemon.imap import ImapSession
    from daemon.matching import Team
    from daemon.sync import sync_mailbox
    from daemon.workers import ParserPool

    if not ctx.args.once:
        raise UsageError(
            "`threadline sync` runs one pass and needs --once; the long-running sync is `threadline daemon`"
        )
    sessions = ctx.sessions()
    everything = ctx.mailboxes(sessions)
    settings = ctx.settings
    mailboxes = [ctx.mailbox(sessions, ctx.args.mailbox)] if ctx.args.mailbox else everything
    if not mailboxes:
        raise UsageError(f"no [[mailboxes]] configured in {settings.source}: nothing to sync")
    credentials = ctx.credentials(sessions)

    def sign_in(mailbox: MailboxSettings) -> Callable[[ImapTarget], ImapSession]:
        # a password or an OAuth token, whichever the mailbox uses
        return lambda _target: ImapSession(credentials.imap_target(mailbox))

    stop = threading.Event()
    # SIGTERM finishes the batch in progress and commits it instead of throwing it away
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    failed = False
    # the sync treats every mailbox's addresses as the team's: the database's mailboxes count too
    team = Team.of(settings.team, everything)
    with ParserPool(settings.matching) as parser:
        for mailbox in mailboxes:
            if stop.is_set():
                break
            result = sync_mailbox(
                mailbox, sessions, matching=settings.matching, team=team, now_fn=now, stop=stop,
                imap_factory=sign_in(mailbox), parser=parser,
            )  # fmt: skip
            failed = failed or result.error is not None
            print(json.dumps(result.as_json()) if ctx.args.json else result.summary(), flush=True)
        if not stop.is_set():
            # earlier mail of the contacts, addresses and domains added since the last run
            relinked = _relink(ctx, sessions, everything, team, parser, None, sign_in, stop)
            failed = failed or not relinked.ok
            if relinked.found or relinked.errors:
                line = {"relink": relinked.summary(), "error": "; ".join(relinked.errors) or None}
                text = json.dumps(line) if ctx.args.json else f"earlier mail: {relinked.summary()}"
                print(text, flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def _relink(
    ctx: Context,
    sessions: sessionmaker[Session],
    mailboxes: Sequence[MailboxSettings],
    team: Team,
    parser: ParserPool,
    selection: HistorySelection | None,
    sign_in: Callable[[MailboxSettings], Callable[[ImapTarget], ImapSession]],
    stop: threading.Event,
) -> RelinkResult:
    from daemon.relink import prune, relink_history

    result = relink_history(
        mailboxes, sessions, matching=ctx.settings.matching, team=team, parser=parser, selection=selection,
        now_fn=now, stop=stop, imap_factory=sign_in,
    )  # fmt: skip
    prune(sessions, matching=ctx.settings.matching, now=now())
    return result


def cmd_relink(ctx: Context) -> int:
    """Look at the skipped mail of the index again against today's contacts and companies."""
    import signal

    from daemon.imap import ImapSession
    from daemon.matching import Team
    from daemon.workers import ParserPool
    from models.history import everything_selection, selection_for_contacts

    since = _parse_since(ctx.args.since) if ctx.args.since else None
    sessions = ctx.sessions()
    everything = ctx.mailboxes(sessions)
    with sessions() as session:
        if ctx.args.contact:
            from models.contacts import find_contact_by_email

            contact = find_contact_by_email(session, ctx.args.contact)
            if contact is None:
                raise CommandError(f"no contact has the address {ctx.args.contact!r}")
            selection = selection_for_contacts(session, [contact.id], since=since)
        else:
            selection = everything_selection(session, since=since)
    credentials = ctx.credentials(sessions)

    def sign_in(mailbox: MailboxSettings) -> Callable[[ImapTarget], ImapSession]:
        return lambda _target: ImapSession(credentials.imap_target(mailbox))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    team = Team.of(ctx.settings.team, everything)
    with ParserPool(ctx.settings.matching) as parser:
        result = _relink(ctx, sessions, everything, team, parser, selection, sign_in, stop)
    print(f"earlier mail: {result.summary()}")
    return EXIT_OK if result.ok else EXIT_FAILED


def _parse_since(value: str) -> datetime:
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d")
    except ValueError:
        raise UsageError(f"--since {value!r}: use a date like 2026-01-31") from None
    return day.replace(tzinfo=UTC)


def cmd_import_mbox(ctx: Context) -> int:
    from daemon.matching import Team
    from daemon.mbox import MboxError, import_mbox

    path = Path(ctx.args.file)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    sessions = ctx.sessions()
    mailbox = ctx.mailbox(sessions, ctx.args.mailbox, include_paused=True)
    team = Team.of(ctx.settings.team, ctx.mailboxes(sessions))
    try:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"importing {path.name}", total=None)
                result = import_mbox(
                    mailbox, sessions, path, matching=ctx.settings.matching, team=team, now_fn=now,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )  # fmt: skip
        else:
            result = import_mbox(
                mailbox, sessions, path, matching=ctx.settings.matching, team=team, now_fn=now
            )
    except MboxError as exc:
        raise CommandError(str(exc)) from None
    print(
        f"{path.name} into {mailbox.name}: {result.new} messages, {result.logged} logged "
        f"({result.duplicates} already logged), {result.contacts_created} contacts created, "
        f"{result.skipped} skipped, {result.quarantined} quarantined in {result.seconds:.1f} s"
    )
    return EXIT_OK


# ---- end of email sync ---------------------------------------------------------------------------------


# ---- mailboxes and the encryption key ------------------------------------------------------------------


def cmd_mailbox_list(ctx: Context) -> int:
    from threadline.mailboxes import mailbox_rows

    rows = mailbox_rows(ctx.settings, ctx.sessions(), ctx.box, now())
    if not rows:
        print(f"no mailboxes: add [[mailboxes]] to {_config_hint(ctx.settings)}")
        return EXIT_OK
    width = max(len(row.name) for row in rows)
    for row in rows:
        how = f"{row.auth} via {row.provider}" if row.provider else row.auth
        print(f"{row.name:<{width}}  {row.source:<8}  {how:<24}  {row.state}")
    return EXIT_OK


def cmd_mailbox_connect(ctx: Context) -> int:
    from models.secrets import require_box
    from threadline.mailboxes import ConnectError, connect

    sessions = ctx.sessions()
    mailbox = ctx.mailbox(sessions, ctx.args.name, include_paused=True)
    if not mailbox.uses_oauth:
        raise UsageError(f"mailbox {mailbox.name!r} signs in with a password: there is nothing to connect")
    require_box(ctx.box, "store an OAuth grant")  # before the user signs in, not after
    credentials = ctx.credentials(sessions)
    provider = ctx.settings.oauth.get(mailbox.provider or "")
    if provider is None:
        raise ConfigError(
            f"{ctx.settings.source}: mailbox {mailbox.name!r} names an unknown provider in [oauth]"
        )
    try:
        line = connect(
            mailbox,
            provider,
            credentials,
            browser=ctx.args.browser,
            out=sys.stdout,
            read_line=sys.stdin.readline,
            check=not ctx.args.no_check,
        )
    except ConnectError as exc:
        raise CommandError(str(exc)) from None
    print(line)
    return EXIT_OK


def cmd_mailbox_disconnect(ctx: Context) -> int:
    from threadline.mailboxes import disconnect

    sessions = ctx.sessions()
    mailbox = ctx.mailbox(sessions, ctx.args.name, include_paused=True)
    if not mailbox.uses_oauth:
        raise UsageError(f"mailbox {mailbox.name!r} signs in with a password: there is nothing to disconnect")
    print(disconnect(mailbox, ctx.credentials(sessions)))
    return EXIT_OK


def cmd_secrets_generate_key(ctx: Context) -> int:
    from threadline.mailboxes import print_key

    print_key(sys.stdout)
    return EXIT_OK


def cmd_secrets_rotate(ctx: Context) -> int:
    from threadline.mailboxes import rotate_key

    count = rotate_key(ctx.sessions(), ctx.box)
    print(f"{count} stored secret{'s' if count != 1 else ''} re-encrypted with the first key in [secrets]")
    return EXIT_OK


# ---- end of mailboxes ----------------------------------------------------------------------------------


# ---- long-running processes ----------------------------------------------------------------------------


def _connector(ctx: Context, sessions: sessionmaker[Session]) -> PanelConnector:
    """The panel's "Connect mailbox", through the daemon's OAuth client."""
    from threadline.mailboxes import PanelConnector

    return PanelConnector(ctx.credentials(sessions))


def _stop_on_signals() -> threading.Event:
    """An Event set by SIGINT or SIGTERM: loops finish their batch, commit and return."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def cmd_daemon(ctx: Context) -> int:
    from daemon.service import Daemon
    from threadline import systemd

    sessions = ctx.sessions()
    stop = _stop_on_signals()
    daemon = Daemon(ctx.settings, sessions, stop=stop)
    _claim(daemon)
    count = len(ctx.mailboxes(sessions))
    systemd.supervise(lambda: bool(daemon.scheduler.running), stop, status=f"syncing {count} mailbox(es)")
    return daemon.run()


def _claim(daemon: Daemon) -> None:
    """One line and exit status 1 when another daemon already runs on this SQLite database."""
    from daemon.leases import DaemonRunningError

    try:
        daemon.claim()
    except DaemonRunningError as exc:
        raise CommandError(str(exc)) from None


def cmd_run(ctx: Context) -> int:
    """The admin panel and the daemon in one process: what `make run` ends in."""
    from admin.app import create_app, serve
    from daemon.service import Daemon
    from threadline import systemd

    settings = ctx.settings
    sessions = ctx.sessions()
    stop = _stop_on_signals()
    host = ctx.args.host or settings.admin.host
    port = ctx.args.port if ctx.args.port is not None else settings.admin.port
    app = create_app(settings, sessions, connector=_connector(ctx, sessions))
    daemon = Daemon(settings, sessions, stop=stop)
    _claim(daemon)
    worker = threading.Thread(target=daemon.run, name="threadline-daemon")
    worker.start()

    def ready(bound_host: str, bound_port: int) -> None:
        print(f"Threadline is running: open http://{bound_host}:{bound_port}/ (Ctrl-C to stop)", flush=True)
        if not settings.mailboxes:
            print(f"No mailboxes configured yet: add [[mailboxes]] to {_config_hint(settings)} (see README)")
        systemd.supervise(
            lambda: bool(daemon.scheduler.running) and systemd.answers_healthz(bound_host, bound_port),
            stop,
            status=f"admin panel on http://{bound_host}:{bound_port}/ and the daemon",
        )

    try:
        serve(app, host, port, threads=settings.admin.threads, stop_event=stop, on_ready=ready)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        stop.set()
        worker.join()
    print("Threadline stopped")
    return EXIT_OK


def _config_hint(settings: Settings) -> str:
    return settings.source if settings.source != "built-in defaults" else "threadline.toml"


# ---- parser ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"threadline: error: {message}\n")


Handler = Callable[[Context], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="threadline", description="Threadline: the CRM that fills itself from your inboxes."
    )
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $THREADLINE_CONFIG or ./threadline.toml)"
    )
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

    user = commands.add_parser("user", help="staff accounts").add_subparsers(
        dest="user_command", metavar="ACTION"
    )
    user.required = True
    user_add = add(user, "add", cmd_user_add, "add a staff member")
    user_add.add_argument("email")
    user_add.add_argument("--name", required=True)
    user_add.add_argument("--role", required=True, choices=["admin", "manager", "rep"])
    user_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    api_key = commands.add_parser("api-key", help="keys for the REST API").add_subparsers(
        dest="api_key_command", metavar="ACTION"
    )
    api_key.required = True
    key_create = add(api_key, "create", cmd_api_key_create, "make a key for a user (printed once)")
    key_create.add_argument("user", help="the user's email: the key acts as them, with their role")
    key_create.add_argument("--name", required=True, help="which tool uses the key")
    add(api_key, "list", cmd_api_key_list, "list keys (never their secrets)")
    add(api_key, "revoke", cmd_api_key_revoke, "stop a key working").add_argument("id", type=int)

    imports = commands.add_parser("import", help="bring data in").add_subparsers(
        dest="import_command", metavar="WHAT"
    )
    imports.required = True
    add(imports, "contacts", cmd_import_contacts, "import or update contacts from a CSV file").add_argument(
        "file"
    )
    add(imports, "deals", cmd_import_deals, "import deals from a CSV file").add_argument("file")

    export = add(commands, "export", cmd_export, "write records to stdout as JSON lines or CSV")
    export.add_argument("what", choices=["contacts", "companies", "deals", "activities", "quarantine"])
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    demo = add(commands, "demo", cmd_demo, "seed a realistic demo dataset and print the demo logins")
    demo.add_argument(
        "--if-empty", action="store_true", help="do nothing when the database already has deals"
    )

    merge = add(commands, "merge", cmd_merge, "merge two contacts or two companies into the first one")
    merge.add_argument("kind", choices=["contacts", "companies"])
    merge.add_argument("keep", metavar="KEEP", help="the one kept: an id, or an email address or a domain")
    merge.add_argument("other", metavar="OTHER", help="the one merged into KEEP and removed")
    merge.add_argument("--dry-run", action="store_true", help="show what would move, change nothing")

    status = add(
        commands, "status", cmd_status, "each mailbox's sync health and the alerts; exit 1 when one fails"
    )
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    backup = add(commands, "backup", cmd_backup, "write a consistent copy of the whole database to FILE")
    backup.add_argument("file")
    restore = add(commands, "restore", cmd_restore, "replace the database with a backup made by `backup`")
    restore.add_argument("file")
    restore.add_argument("--force", action="store_true", help="replace a database that already holds data")

    # alerts feature
    alerts = add(
        commands,
        "alerts",
        cmd_alerts,
        "scan for stalled deals, overdue tasks and waiting leads; email owners",
    )
    alerts.add_argument("--once", action="store_true", help="run one scan now and exit")
    alerts.add_argument("--json", action="store_true", help="print the summary as JSON")

    # admin panel feature
    admin = add(commands, "admin", cmd_admin, "serve the admin panel (waitress) until interrupted")
    admin.add_argument("--host", help="address to listen on (default: [admin] host, 127.0.0.1)")
    admin.add_argument("--port", type=int, help="port to listen on (default: [admin] port, 8000)")

    # email sync feature
    sync = add(commands, "sync", cmd_sync, "fetch new mail from the configured mailboxes and file it")
    sync.add_argument("--once", action="store_true", help="one pass over every mailbox, then exit")
    sync.add_argument("--mailbox", metavar="NAME", help="only this mailbox")
    sync.add_argument("--json", action="store_true", help="one JSON object per mailbox instead of a line")
    relink = add(
        commands, "relink", cmd_relink, "find the earlier emails of contacts and companies and log them"
    )
    relink.add_argument("--since", metavar="DATE", help="only mail sent on or after this day (YYYY-MM-DD)")
    relink.add_argument("--contact", metavar="EMAIL", help="only the contact with this address")
    mbox = add(imports, "mbox", cmd_import_mbox, "backfill an mbox export through the sync's pipeline")
    mbox.add_argument("file")
    mbox.add_argument("--mailbox", metavar="NAME", required=True, help="the [[mailboxes]] entry it is from")

    # mailboxes and the encryption key
    mailbox = commands.add_parser("mailbox", help="mailboxes and their OAuth sign-in").add_subparsers(
        dest="mailbox_command", metavar="ACTION"
    )
    mailbox.required = True
    add(mailbox, "list", cmd_mailbox_list, "list every mailbox with how it signs in and its state")
    connect = add(
        mailbox,
        "connect",
        cmd_mailbox_connect,
        "connect a mailbox through its OAuth provider (prints a code and an address, then waits)",
    )
    connect.add_argument("name")
    connect.add_argument(
        "--browser",
        action="store_true",
        help="sign in through the provider's consent page and paste the address it sends you to "
        "(instead of the device code; the default for providers without one, such as Google)",
    )
    connect.add_argument("--no-check", action="store_true", help="do not sign in to IMAP afterwards")
    disconnect = add(
        mailbox, "disconnect", cmd_mailbox_disconnect, "forget a mailbox's OAuth grant and revoke it"
    )
    disconnect.add_argument("name")
    secrets_ = commands.add_parser("secrets", help="the key that encrypts stored secrets").add_subparsers(
        dest="secrets_command", metavar="ACTION"
    )
    secrets_.required = True
    add(secrets_, "generate-key", cmd_secrets_generate_key, "print a new encryption key for [secrets]")
    add(
        secrets_,
        "rotate",
        cmd_secrets_rotate,
        "re-encrypt every stored secret with the first key in [secrets] (put the new key first)",
    )

    # long-running processes
    add(commands, "daemon", cmd_daemon, "sync every mailbox continuously and run the alert schedule")
    run = add(commands, "run", cmd_run, "serve the admin panel and run the daemon together")
    run.add_argument("--host", help="address to listen on (default: [admin] host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default: [admin] port, 8000)")

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
