"""Benchmark of email ingest: a realistic team inbox in a real Dovecot, synced by `threadline sync --once`.

Loads N messages from bench/mailgen.py (1-60 KB, mean ~15 KB, HTML alternatives, attachments, the mix of a
sales rep's inbox: 15 % client mail that is logged, the rest internal, newsletters and unknown senders) into
INBOX and Sent of one Dovecot user (MULTIAPPEND), then measures in one run:

  (a) the floor: one IMAP connection, `UID FETCH BODY.PEEK[]` in batches of 500 over both folders and
      `daemon.parse.parse_message` on every message: messages/s;
  (b) `threadline sync --once --json` end to end as a subprocess (Python start-up included) on the same
      mailbox, on a fresh SQLite file and a fresh PostgreSQL database (created and dropped here; the server
      from $THREADLINE_TEST_PG_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres), each
      migrated with `threadline db upgrade`, with the mailbox owner added as a user and the known contacts
      imported from CSV first: messages/s and the ratio b/a (target >= 0.6 at 10,000 messages);
  (c) a poll with nothing new: the `seconds` of `threadline sync --once --json` run again, and the in-process
      `daemon.sync.sync_mailbox` call timed alone (login, LIST, one STATUS per folder, database reads;
      median of 20), at N and at 100,000 messages (target < 20 ms);
  (d) the peak RSS of each sync subprocess (os.wait4's ru_maxrss; target < 250 MB).

The host's load average is printed too: these machines are shared, and a busy neighbour halves the numbers.

    .venv/bin/python -m bench.ingest                       # 10,000 messages, both databases, then 100,000
    .venv/bin/python -m bench.ingest --messages 2000 --skip-100k --skip-postgres
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon.parse import parse_message
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.mailgen import GeneratedMessage, generate_mailbox, known_contacts, mailbox_owner
from daemon.imap import ImapSession, ImapTarget
from daemon.sync import SyncResult, mailbox_target, sync_mailbox
from models.db import make_engine, make_sessionmaker
from settings import load_settings
from tests.fixtures.dovecot import DovecotServer

PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEAM_DOMAIN = "teamcorp.example"
IMAP_USER = "sam"
PASSWORD_ENV = "THREADLINE_BENCH_IMAP_PASSWORD"
FOLDERS = ("INBOX", "Sent")
FLOOR_BATCH = 500
LOAD_CHUNK = 2000
BIG_MAILBOX = 100_000
IDLE_REPEATS = 20

TARGET_RATIO = 0.6
TARGET_IDLE_MS = 20.0
TARGET_RSS_MB = 250.0


@dataclass
class Loaded:
    messages: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    folders: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def expected_logged(self) -> int:
        return self.kinds["client_in"] + self.kinds["client_out"]

    def add(self, messages: Sequence[GeneratedMessage]) -> None:
        self.messages += len(messages)
        self.bytes += sum(len(m.raw) for m in messages)
        self.kinds.update(m.kind for m in messages)
        self.folders.update(m.folder for m in messages)


@dataclass(frozen=True)
class Floor:
    messages: int
    seconds: float
    fetch_seconds: float
    parse_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    max_rss_mb: float

    def results(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class SyncRun:
    db: str
    messages: int
    run: CliRun

    @property
    def new(self) -> int:
        return sum(int(str(r["new"])) for r in self.run.results())

    @property
    def logged(self) -> int:
        return sum(int(str(r["logged"])) for r in self.run.results())

    @property
    def reported_seconds(self) -> float:
        return sum(float(str(r["seconds"])) for r in self.run.results())

    @property
    def rate(self) -> float:
        return self.new / self.run.wall if self.run.wall else 0.0


@dataclass(frozen=True)
class IdlePoll:
    db: str
    messages: int
    cli_seconds: float  # the JSON 'seconds' of `sync --once` with nothing new
    cli_wall: float
    in_process_ms: list[float]  # sync_mailbox on a fresh IMAP connection each time
    kept_open_ms: list[float]  # sync_mailbox given an IMAP connection kept open (as the daemon can)
    imap_floor_ms: list[float]  # connect + login + STATUS per folder + logout, nothing else
    imap_open_ms: list[float]  # STATUS per folder on a connection kept open
    imap_per_folder_ms: list[float]  # STATUS per folder, each on its own kept-open connection


# -- Dovecot -------------------------------------------------------------------------------------------------


def start_dovecot() -> DovecotServer:
    dovecot_bin = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/bin")
    doveadm_bin = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/sbin:/usr/bin")
    if dovecot_bin is None or doveadm_bin is None:
        raise SystemExit("bench/ingest.py needs Dovecot: apt-get install -y dovecot-imapd")
    root = Path(tempfile.mkdtemp(prefix="threadline-bench-dovecot-"))
    root.chmod(0o755)  # Dovecot's unprivileged processes must reach their sockets and the mail
    server = DovecotServer(root, dovecot_bin, doveadm_bin)
    server.start()
    return server


def load_messages(server: DovecotServer, start: int, count: int, seed: int, loaded: Loaded) -> None:
    """Generate and MULTIAPPEND messages start..start+count-1 in chunks, so 100,000 never sit in memory."""
    began = time.perf_counter()
    for chunk_start in range(start, start + count, LOAD_CHUNK):
        size = min(LOAD_CHUNK, start + count - chunk_start)
        messages = generate_mailbox(size, team_domain=TEAM_DOMAIN, seed=seed, start=chunk_start).messages
        for folder in FOLDERS:
            raws = [m.raw for m in messages if m.folder == folder]
            if raws:
                server.append(IMAP_USER, folder, raws)
        loaded.add(messages)
        print(f"  loaded {loaded.messages:,} messages", end="\r", file=sys.stderr, flush=True)
    loaded.seconds += time.perf_counter() - began
    print(file=sys.stderr)


# -- (a) the floor -------------------------------------------------------------------------------------------


def measure_floor(server: DovecotServer) -> Floor:
    target = ImapTarget(server.host, server.port, "none", IMAP_USER, server.password(IMAP_USER))
    fetch_seconds = parse_seconds = 0.0
    count = 0
    began = time.perf_counter()
    with ImapSession(target) as imap:
        for folder in FOLDERS:
            imap.select_readonly(folder)
            uids = imap.search_uids_from(1)
            for batch in _chunks(uids, FLOOR_BATCH):
                t0 = time.perf_counter()
                fetched = imap.fetch_messages(batch)
                t1 = time.perf_counter()
                for message in fetched:
                    parse_message(message.raw)
                parse_seconds += time.perf_counter() - t1
                fetch_seconds += t1 - t0
                count += len(fetched)
    return Floor(count, time.perf_counter() - began, fetch_seconds, parse_seconds)


def measure_idle_floor(server: DovecotServer) -> tuple[list[float], list[float], list[float]]:
    """What a poll costs IMAP at least (ms): on a fresh connection (connect, LOGIN, STATUS per folder,
    LOGOUT); on one connection kept open between polls (STATUS per folder only); and on one kept-open
    connection per folder. Dovecot 2.3 (maildir) answers a STATUS that alternates between two big folders
    on one connection far slower than a STATUS of the folder that connection asked about last."""
    target = ImapTarget(server.host, server.port, "none", IMAP_USER, server.password(IMAP_USER))
    fresh: list[float] = []
    for attempt in range(IDLE_REPEATS + 1):
        began = time.perf_counter()
        with ImapSession(target) as imap:
            for folder in FOLDERS:
                imap.status(folder)
        if attempt:
            fresh.append((time.perf_counter() - began) * 1000)
    kept: list[float] = []
    with ImapSession(target) as imap:
        for attempt in range(IDLE_REPEATS + 1):
            began = time.perf_counter()
            for folder in FOLDERS:
                imap.status(folder)
            if attempt:
                kept.append((time.perf_counter() - began) * 1000)
    per_folder: list[float] = []
    with contextlib.ExitStack() as stack:
        sessions = {folder: stack.enter_context(ImapSession(target)) for folder in FOLDERS}
        for attempt in range(IDLE_REPEATS + 1):
            began = time.perf_counter()
            for folder, imap in sessions.items():
                imap.status(folder)
            if attempt:
                per_folder.append((time.perf_counter() - began) * 1000)
    return fresh, kept, per_folder


# -- (b)-(d) the CLI -----------------------------------------------------------------------------------------


class Workspace:
    """One database with its config file, prepared the way a team would: migrate, add the rep, import
    the contacts they already have."""

    def __init__(self, kind: str, directory: Path, server: DovecotServer, seed: int) -> None:
        self.kind = kind
        self.directory = directory
        self.server = server
        self.seed = seed
        self.pg_name: str | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{directory / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            self.pg_name = f"threadline_bench_ingest_{uuid.uuid4().hex[:10]}"
            self.url = make_url(PG_ADMIN_URL).set(database=self.pg_name).render_as_string(hide_password=False)
        self.config = directory / f"threadline-{kind}-{uuid.uuid4().hex[:8]}.toml"
        self.env = {**os.environ, PASSWORD_ENV: server.password(IMAP_USER)}

    def prepare(self) -> None:
        if self.pg_name is not None:
            _pg_admin(f'CREATE DATABASE "{self.pg_name}"')
        self.config.write_text(
            f"""[database]
url = "{self.url}"

[team]
domains = ["{TEAM_DOMAIN}"]

[matching]
create_contacts = "sent"

[[mailboxes]]
name = "{IMAP_USER}"
host = "{self.server.host}"
port = {self.server.port}
security = "none"
username = "{IMAP_USER}"
password_env = "{PASSWORD_ENV}"
address = "{mailbox_owner(TEAM_DOMAIN)}"
owner = "{mailbox_owner(TEAM_DOMAIN)}"

[logging]
level = "WARNING"
"""
        )
        contacts_csv = self.directory / "contacts.csv"
        with contacts_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "email", "company", "company_domain"])
            for contact in known_contacts(seed=self.seed):
                writer.writerow([contact.name, contact.email, contact.company, contact.company_domain])
        self.cli("db", "upgrade", check=True)
        self.cli("user", "add", mailbox_owner(TEAM_DOMAIN), "--name", "Sam Rivera", "--role", "rep",
                 "--password-stdin", stdin="bench-password-1234\n", check=True)  # fmt: skip
        self.cli("import", "contacts", str(contacts_csv), check=True)

    def cli(self, *args: str, stdin: str | None = None, check: bool = False) -> CliRun:
        """Run `threadline --config CFG ARGS`; its own peak RSS comes from wait4 on exactly that child."""
        command = [sys.executable, "-m", "threadline", "--config", str(self.config), *args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            began = time.perf_counter()
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
            )
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin.encode())
                process.stdin.close()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - began
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            run = CliRun(
                returncode=process.returncode,
                stdout=out.read().decode("utf-8", "replace"),
                stderr=err.read().decode("utf-8", "replace"),
                wall=wall,
                max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
            )
        if check and run.returncode != 0:
            raise SystemExit(
                f"threadline {' '.join(args)} failed ({run.returncode}):\n{run.stderr}{run.stdout}"
            )
        return run

    def sync(self, messages: int) -> SyncRun:
        run = self.cli("sync", "--once", "--json")
        if run.returncode != 0 or not run.results():
            raise SystemExit(f"threadline sync --once failed ({run.returncode}):\n{run.stderr}{run.stdout}")
        return SyncRun(self.kind, messages, run)

    def idle_poll(self, messages: int) -> IdlePoll:
        cli = self.sync(messages)
        if cli.new:
            raise SystemExit(f"the idle poll found {cli.new} new messages: the sync before it did not finish")
        settings = load_settings(self.config, environ=self.env)
        mailbox = settings.mailboxes[0]
        engine = make_engine(settings.database.url)
        try:
            sessions = make_sessionmaker(engine)
            fresh_polls = _timed_polls(lambda: sync_mailbox(settings, mailbox, sessions))
            # the daemon's way: one IMAP connection kept open from poll to poll
            with ImapSession(mailbox_target(mailbox)) as imap:
                kept_polls = _timed_polls(lambda: sync_mailbox(settings, mailbox, sessions, imap=imap))
        finally:
            engine.dispose()
        fresh, kept, per_folder = measure_idle_floor(self.server)
        return IdlePoll(
            self.kind, messages, cli.reported_seconds, cli.run.wall, fresh_polls, kept_polls, fresh, kept,
            per_folder,
        )  # fmt: skip

    def profile_first_sync(self, out: Path, top: int) -> str:
        """A first sync in-process under cProfile (this workspace's database must be fresh): the hotspots
        by own time and by cumulative time, as text; the raw stats go to `out`."""
        settings = load_settings(self.config, environ=self.env)
        engine = make_engine(settings.database.url)
        try:
            profiler = cProfile.Profile()
            sessions = make_sessionmaker(engine)
            result = profiler.runcall(sync_mailbox, settings, settings.mailboxes[0], sessions)
        finally:
            engine.dispose()
        profiler.dump_stats(out)
        text = io.StringIO()
        text.write(
            f"\nprofile of an in-process first sync on {self.kind}: {result.new:,} new, {result.logged:,} "
            f"logged in {result.seconds:.1f} s (under cProfile); stats in {out}\n"
        )
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return text.getvalue()

    def profile_idle(self, messages: int, top: int) -> str:
        """IDLE_REPEATS polls with nothing new under cProfile, by cumulative time, as text."""
        settings = load_settings(self.config, environ=self.env)
        engine = make_engine(settings.database.url)
        try:
            sessions = make_sessionmaker(engine)
            sync_mailbox(settings, settings.mailboxes[0], sessions)  # warm-up, as in the idle poll measure
            profiler = cProfile.Profile()
            for _ in range(IDLE_REPEATS):
                profiler.runcall(sync_mailbox, settings, settings.mailboxes[0], sessions)
        finally:
            engine.dispose()
        text = io.StringIO()
        text.write(f"\nprofile of {IDLE_REPEATS} idle polls on {self.kind} at {messages:,} messages:\n")
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top // 2)
        return text.getvalue()

    def drop(self) -> None:
        if self.pg_name is not None:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


def _pg_admin(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


# -- report --------------------------------------------------------------------------------------------------


def report(
    loaded: Loaded,
    floor: Floor,
    syncs: Sequence[SyncRun],
    idles: Sequence[IdlePoll],
    loads: Sequence[float],
) -> None:
    n = floor.messages
    folders = ", ".join(f"{folder} {count:,}" for folder, count in sorted(loaded.folders.items()))
    mean_kb = loaded.bytes / loaded.messages / 1024
    mix = ", ".join(f"{kind} {count / loaded.messages:.0%}" for kind, count in loaded.kinds.most_common())
    print()
    print(f"Ingest benchmark: {loaded.messages:,} messages in Dovecot, mean {mean_kb:.1f} KB ({folders})")
    print(f"  mix: {mix}; loaded in {loaded.seconds:.0f} s (generation + MULTIAPPEND)")
    print(
        f"  load average (1 min) during the run: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores"
    )
    print()
    header = f"{'measure':<48} {'value':>14} {'target':>16} {'ratio':>8}  verdict"
    print(header)
    print("-" * len(header))

    def row(
        name: str, value: str, target: str = "", ratio: float | None = None, ok: bool | None = None
    ) -> None:
        ratio_text = f"{ratio:.2f}" if ratio is not None else ""
        verdict = "" if ok is None else ("meets" if ok else "MISSES")
        print(f"{name:<48} {value:>14} {target:>16} {ratio_text:>8}  {verdict}")

    row(f"(a) floor: FETCH BODY.PEEK[] + parse, {n:,} msgs", f"{floor.rate:,.0f} msg/s")
    row("    of which IMAP fetch / parse_message", f"{floor.fetch_seconds:.1f} / {floor.parse_seconds:.1f} s")
    for run in syncs:
        ratio = run.rate / floor.rate
        label = f"(b) sync --once {run.db}, {run.new:,} new"
        if run.messages == n:
            row(label, f"{run.rate:,.0f} msg/s", f">= {TARGET_RATIO} x floor", ratio, ratio >= TARGET_RATIO)
        else:
            row(label, f"{run.rate:,.0f} msg/s", "", ratio)
        row(
            f"    wall {run.run.wall:.1f} s, JSON seconds {run.reported_seconds:.1f}, logged",
            f"{run.logged:,}",
        )
    for idle in idles:
        big = idle.messages >= BIG_MAILBOX
        target = f"< {TARGET_IDLE_MS:.0f} ms"
        for label, timings in (
            (f"(c) idle poll {idle.db} at {idle.messages:,}: sync_mailbox", idle.in_process_ms),
            ("    sync_mailbox(imap=connection kept open)", idle.kept_open_ms),
        ):
            median = statistics.median(timings)
            spread = f"{min(timings):.0f}-{max(timings):.0f}"
            ok = median < TARGET_IDLE_MS if big else None
            row(f"{label}, median", f"{median:.1f} ms", target, median / TARGET_IDLE_MS, ok)
            row(f"        min-max of {len(timings)}", f"{spread} ms")
        fresh_imap = statistics.median(idle.imap_floor_ms)
        row("    IMAP alone: connect+login+STATUS x2, median", f"{fresh_imap:.1f} ms")
        row(
            "    IMAP alone: STATUS x2 on an open connection",
            f"{statistics.median(idle.imap_open_ms):.1f} ms",
        )
        per_folder = statistics.median(idle.imap_per_folder_ms)
        row("    IMAP alone: STATUS, one open connection each", f"{per_folder:.1f} ms")
        cli = f"{idle.cli_seconds * 1000:.0f} / {idle.cli_wall * 1000:.0f} ms"
        row("    CLI: JSON seconds / wall incl. Python start", cli)
    for run in syncs:
        rss = run.run.max_rss_mb
        target = f"< {TARGET_RSS_MB:.0f} MB"
        row(
            f"(d) peak RSS, sync {run.db} ({run.new:,} new)",
            f"{rss:.0f} MB",
            target,
            rss / TARGET_RSS_MB,
            rss < TARGET_RSS_MB,
        )
    logged = sum(run.logged for run in syncs if run.db == "sqlite")
    print(
        f"\nlogged on SQLite: {logged:,}; the generator's client mail: {loaded.expected_logged:,} (a few more"
    )
    print("can be logged: an unknown sender may share a known contact's free-mail address)")


# -- main ----------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=10_000, help="mailbox size for (a), (b), (c)")
    parser.add_argument("--skip-100k", action="store_true", help="no idle poll at 100,000 messages")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--big-postgres", action="store_true", help="sync and idle-poll 100,000 messages on PostgreSQL too"
    )
    parser.add_argument(
        "--profile",
        choices=["sqlite", "postgresql"],
        help="also profile (cProfile, in-process) a first sync on a fresh database of this kind at "
        "--messages, and its idle polls at the largest size",
    )
    parser.add_argument("--profile-out", default="ingest.prof", help="where to write the cProfile stats")
    args = parser.parse_args(argv)

    loads: list[float] = [os.getloadavg()[0]]
    server = start_dovecot()
    workdir = Path(tempfile.mkdtemp(prefix="threadline-bench-ingest-"))
    workspaces: list[Workspace] = []
    try:
        server.add_user(IMAP_USER, uuid.uuid4().hex)
        loaded = Loaded()
        print(f"loading {args.messages:,} messages into Dovecot ...", file=sys.stderr)
        load_messages(server, 0, args.messages, args.seed, loaded)
        loads.append(os.getloadavg()[0])

        print("measuring the floor ...", file=sys.stderr)
        floor = measure_floor(server)
        loads.append(os.getloadavg()[0])

        kinds = ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]
        syncs: list[SyncRun] = []
        idles: list[IdlePoll] = []
        for kind in kinds:
            workspace = Workspace(kind, workdir, server, args.seed)
            workspaces.append(workspace)
            workspace.prepare()
            print(f"sync --once on {kind} ...", file=sys.stderr)
            syncs.append(workspace.sync(args.messages))
            loads.append(os.getloadavg()[0])
            idles.append(workspace.idle_poll(args.messages))
        profiles: list[str] = []
        if args.profile:
            print(f"profiling a first sync on {args.profile} ...", file=sys.stderr)
            fresh = Workspace(args.profile, workdir, server, args.seed)
            try:
                fresh.prepare()
                profiles.append(fresh.profile_first_sync(Path(args.profile_out), top=30))
            finally:
                fresh.drop()

        if not args.skip_100k and args.messages < BIG_MAILBOX:
            more = BIG_MAILBOX - args.messages
            print(f"loading {more:,} more messages for the 100,000 idle poll ...", file=sys.stderr)
            load_messages(server, args.messages, more, args.seed, loaded)
            for workspace in workspaces:
                if workspace.kind != "sqlite" and not args.big_postgres:
                    continue
                print(f"sync --once on {workspace.kind} up to {BIG_MAILBOX:,} ...", file=sys.stderr)
                syncs.append(workspace.sync(more))
                loads.append(os.getloadavg()[0])
                idles.append(workspace.idle_poll(BIG_MAILBOX))
        loads.append(os.getloadavg()[0])
        if args.profile:
            measured = next(w for w in workspaces if w.kind == args.profile)
            profiles.append(measured.profile_idle(idles[-1].messages, top=30))
        report(loaded, floor, syncs, idles, loads)
        for profile in profiles:
            print(profile)
    finally:
        for workspace in workspaces:
            workspace.drop()
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _timed_polls(poll: Callable[[], SyncResult]) -> list[float]:
    """Milliseconds of IDLE_REPEATS polls that must find nothing new; one untimed poll first warms
    connection pools and caches."""
    timings: list[float] = []
    for attempt in range(IDLE_REPEATS + 1):
        began = time.perf_counter()
        result = poll()
        elapsed = (time.perf_counter() - began) * 1000
        if result.error or result.new:
            raise SystemExit(f"idle poll: unexpected result {result}")
        if attempt:
            timings.append(elapsed)
    return timings


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


if __name__ == "__main__":
    raise SystemExit(main())
