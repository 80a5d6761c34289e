"""Benchmark of email ingest: realistic team inboxes in a real Dovecot, synced by `threadline sync --once`.

Three mailboxes are loaded (MULTIAPPEND) from bench/mailgen.py (1-60 KB, mean ~15 KB, HTML alternatives,
attachments) into INBOX and Sent of their own Dovecot user:

- "all logged": every message is client mail a CRM logs (from or to the known contacts, imported first);
- "mixed": the mix of a sales rep's inbox (15 % logged; internal mail, newsletters, unknown senders);
- "hostile": the messages that once stalled a mailbox (four with 75,000 Cc, a Content-Type of 60,000
  semicolons, mail from a team address to 2,000 people, a 30 MB message, one the server returns empty,
  one that parses for seconds) among normal mail.

Measured in one run, on the same machine, so ratios hold however busy it is:

  (a) the floor, on the all-logged mailbox: one IMAP connection, `UID FETCH BODY.PEEK[]` in batches of 500
      over both folders and mail-parser's `parse_from_bytes` on every message, one loop on one core;
  (b) `threadline sync --once --json` end to end as a subprocess (Python start-up included) on the same
      mailbox, on a fresh SQLite file and a fresh PostgreSQL database (created and dropped here; the server
      from $THREADLINE_TEST_PG_URL), each migrated, with the owner added and the known contacts imported:
      messages/s and the ratio to the floor (target >= 1.0); `--runs` repeats it on fresh databases;
  (c) the idle case: `sync --once` again with nothing new: its own time, `seconds` less `login_seconds`
      (the IMAP server's connect and login; target <= 20 ms), and a poll in-process on connections kept
      open the way the daemon keeps them (one per folder);
  (d) peak memory of that sync with one 30 MB message added to the mailbox: the sync process alone
      (wait4's ru_maxrss) and the sync with its parser processes (the largest sum of their RSS, sampled every
      20 ms; target < 250 MB);
  (e) the mixed mailbox, as before (most mail decided from headers alone);
  (f) the hostile mailbox: wall time of `sync --once` and every message accounted for.

The host's load average is printed too: these machines are shared.

    .venv/bin/python -m bench.ingest                                  # 10,000 messages, everything
    .venv/bin/python -m bench.ingest --messages 2000 --skip-postgres --cases all-logged idle
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import format_datetime, make_msgid
from pathlib import Path

import mailparser
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.mailgen import ALL_LOGGED, EPOCH, MIX, generate_mailbox, known_contacts, mailbox_owner
from daemon.imap import ImapSession, ImapTarget
from daemon.matching import Team
from daemon.sync import MailboxConnections, SyncResult, sync_mailbox
from models.db import make_engine, make_sessionmaker
from settings import load_settings
from tests.fixtures.dovecot import DovecotServer

PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEAM_DOMAIN = "teamcorp.example"
PASSWORD_ENV = "THREADLINE_BENCH_IMAP_PASSWORD"
FOLDERS = ("INBOX", "Sent")
FLOOR_BATCH = 500
LOAD_CHUNK = 2000
IDLE_REPEATS = 20
CASES = ("all-logged", "idle", "memory", "mixed", "hostile")

TARGET_RATIO = 1.0
TARGET_IDLE_MS = 20.0
TARGET_RSS_MB = 250.0


@dataclass
class Loaded:
    user: str
    messages: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


@dataclass(frozen=True)
class Floor:
    messages: int
    seconds: float
    fetch_seconds: float
    parse_seconds: float
    cpu_seconds: float = 0.0  # this process's CPU (user + system) for the loop

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    main_rss_mb: float  # the sync process alone: its peak RSS (VmHWM)
    tree_rss_mb: float  # the sync's peak plus the peaks of the parser processes it ran at once
    sampled_rss_mb: float  # the largest sum of their RSS seen at one instant
    cpu_seconds: float = 0.0  # CPU (user + system) of the sync and its parser processes together

    def results(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def total(self, key: str) -> float:
        return sum(float(str(r[key])) for r in self.results())


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


def load_generated(
    server: DovecotServer, user: str, count: int, seed: int, mix: Sequence[tuple[str, int]]
) -> Loaded:
    """Generate and MULTIAPPEND `count` messages in chunks, so 100,000 never sit in memory."""
    loaded = Loaded(user)
    server.add_user(user, uuid.uuid4().hex)
    began = time.perf_counter()
    for start in range(0, count, LOAD_CHUNK):
        size = min(LOAD_CHUNK, count - start)
        messages = generate_mailbox(size, team_domain=TEAM_DOMAIN, seed=seed, start=start, mix=mix).messages
        for folder in FOLDERS:
            raws = [m.raw for m in messages if m.folder == folder]
            if raws:
                server.append(user, folder, raws)
        loaded.messages += len(messages)
        loaded.bytes += sum(len(m.raw) for m in messages)
        loaded.kinds.update(m.kind for m in messages)
    loaded.seconds = time.perf_counter() - began
    return loaded


def big_message(megabytes: int = 30) -> bytes:
    """A message from a known contact with an attachment making it `megabytes` MB."""
    contact = known_contacts()[0]
    attachment = os.urandom(megabytes * 1024 * 1024 * 3 // 4)
    import base64

    encoded = base64.encodebytes(attachment)
    return (
        (
            f"From: {contact.name} <{contact.email}>\r\nTo: {mailbox_owner(TEAM_DOMAIN)}\r\n"
            f"Subject: the big one\r\nDate: {format_datetime(EPOCH)}\r\nMessage-ID: {make_msgid()}\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nThe video.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="video.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + encoded
        + b"--b--\r\n"
    )


def hostile_messages() -> list[bytes]:
    """The messages of issue 8's measurements, in the order the hostile mailbox gets them."""
    contact = known_contacts()[0]
    known = f"{contact.name} <{contact.email}>".encode()
    owner = mailbox_owner(TEAM_DOMAIN).encode()
    crowd = b",\r\n ".join(b"p%d@crowd.example" % i for i in range(75_000))

    def plain(sender: bytes, to: bytes, cc: bytes = b"", subject: bytes = b"hostile") -> bytes:
        cc_line = b"Cc: " + cc + b"\r\n" if cc else b""
        return (
            b"From: " + sender + b"\r\nSubject: " + subject + b"\r\nMessage-ID: " + make_msgid().encode()
            + b"\r\nTo: " + to + b"\r\n" + cc_line + b"Content-Type: text/plain\r\n\r\nHello.\r\n"
        )  # fmt: skip

    semicolons = (
        b"From: " + known + b"\r\nTo: " + owner + b"\r\nSubject: semicolons\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain" + b";" * 60_000 + b"\r\n\r\ntext\r\n--b--\r\n"
    )
    runaway = (
        b"From: " + known + b"\r\nTo: " + owner + b"\r\nSubject: runaway\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html\r\n\r\n" + b"<b>x</b>\r\n" * 1_000_000
    )
    team_bulk = b",\r\n ".join(b"person%d@company%d.example" % (i, i) for i in range(2000))
    return [
        *(plain(b"spam@bulk.example", owner, crowd) for _ in range(4)),
        semicolons,
        plain(owner, team_bulk, subject=b"announcement"),
        big_message(30),
        plain(known, owner, subject=b"lost by the server"),
        runaway,
    ]


# -- (a) the floor -------------------------------------------------------------------------------------------


def measure_floor(server: DovecotServer, user: str) -> Floor:
    target = ImapTarget(server.host, server.port, "none", user, server.password(user))
    fetch_seconds = parse_seconds = 0.0
    count = 0
    began = time.perf_counter()
    cpu_began = _cpu(resource.RUSAGE_SELF)
    with ImapSession(target) as imap, warnings.catch_warnings(action="ignore"):
        for folder in FOLDERS:
            imap.select_readonly(folder)
            uids = imap.search_uids_from(1)
            for batch in _chunks(uids, FLOOR_BATCH):
                t0 = time.perf_counter()
                fetched = imap.fetch_messages(batch)
                t1 = time.perf_counter()
                for message in fetched:
                    mailparser.parse_from_bytes(message.data)
                parse_seconds += time.perf_counter() - t1
                fetch_seconds += t1 - t0
                count += len(fetched)
    seconds = time.perf_counter() - began
    return Floor(count, seconds, fetch_seconds, parse_seconds, _cpu(resource.RUSAGE_SELF) - cpu_began)


def measure_idle_imap(server: DovecotServer, user: str) -> tuple[list[float], list[float]]:
    """What a poll costs IMAP at least (ms): a fresh connection (connect, LOGIN, STATUS per folder, LOGOUT),
    and STATUS per folder on one kept-open connection per folder."""
    target = ImapTarget(server.host, server.port, "none", user, server.password(user))
    fresh: list[float] = []
    for attempt in range(IDLE_REPEATS + 1):
        began = time.perf_counter()
        with ImapSession(target) as imap:
            for folder in FOLDERS:
                imap.status(folder)
        if attempt:
            fresh.append((time.perf_counter() - began) * 1000)
    per_folder: list[float] = []
    with contextlib.ExitStack() as stack:
        sessions = {folder: stack.enter_context(ImapSession(target)) for folder in FOLDERS}
        for attempt in range(IDLE_REPEATS + 1):
            began = time.perf_counter()
            for folder, imap in sessions.items():
                imap.status(folder)
            if attempt:
                per_folder.append((time.perf_counter() - began) * 1000)
    return fresh, per_folder


# -- (b)-(f) the CLI -----------------------------------------------------------------------------------------


class Workspace:
    """One database with its config file, prepared the way a team would: migrate, add the rep, import
    the contacts they already have."""

    def __init__(self, kind: str, directory: Path, server: DovecotServer, user: str, seed: int) -> None:
        self.kind = kind
        self.directory = directory
        self.server = server
        self.user = user
        self.seed = seed
        self.pg_name: str | None = None
        if kind == "sqlite":
            self.url = f"sqlite:///{directory / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        else:
            self.pg_name = f"threadline_bench_ingest_{uuid.uuid4().hex[:10]}"
            self.url = make_url(PG_ADMIN_URL).set(database=self.pg_name).render_as_string(hide_password=False)
        self.config = directory / f"threadline-{kind}-{uuid.uuid4().hex[:8]}.toml"
        self.env = {**os.environ, PASSWORD_ENV: server.password(user)}

    def prepare(self, matching: str = "") -> None:
        if self.pg_name is not None:
            _pg_admin(f'CREATE DATABASE "{self.pg_name}"')
        self.config.write_text(
            f"""[database]
url = "{self.url}"

[team]
domains = ["{TEAM_DOMAIN}"]

[matching]
create_contacts = "sent"
{matching}

[[mailboxes]]
name = "{self.user}"
host = "{self.server.host}"
port = {self.server.port}
security = "none"
username = "{self.user}"
password_env = "{PASSWORD_ENV}"
address = "{mailbox_owner(TEAM_DOMAIN)}"
owner = "{mailbox_owner(TEAM_DOMAIN)}"

[logging]
level = "WARNING"
"""
        )
        contacts_csv = self.directory / f"contacts-{uuid.uuid4().hex[:8]}.csv"
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
        """Run `threadline --config CFG ARGS`, sampling the memory of it and its child processes."""
        command = [sys.executable, "-m", "threadline", "--config", str(self.config), *args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            began = time.perf_counter()
            cpu_began = _cpu(resource.RUSAGE_CHILDREN)
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
            )
            sampler = _TreeMemory(process.pid)
            sampler.start()
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin.encode())
                process.stdin.close()
            # not wait4's ru_maxrss: on Linux it includes the RSS of this (big) process at the fork
            _, status = os.waitpid(process.pid, 0)
            wall = time.perf_counter() - began
            sampler.stop()
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            run = CliRun(
                returncode=process.returncode,
                stdout=out.read().decode("utf-8", "replace"),
                stderr=err.read().decode("utf-8", "replace"),
                wall=wall,
                main_rss_mb=sampler.main_mb,
                tree_rss_mb=sampler.peak_mb,
                sampled_rss_mb=sampler.sampled_mb,
                # the sync waits for its parser processes, so their CPU is counted in its children's
                cpu_seconds=_cpu(resource.RUSAGE_CHILDREN) - cpu_began,
            )
        if check and run.returncode != 0:
            raise SystemExit(
                f"threadline {' '.join(args)} failed ({run.returncode}):\n{run.stderr}{run.stdout}"
            )
        return run

    def sync(self) -> CliRun:
        run = self.cli("sync", "--once", "--json")
        if run.returncode != 0 or not run.results():
            raise SystemExit(f"threadline sync --once failed ({run.returncode}):\n{run.stderr}{run.stdout}")
        return run

    def kept_open_polls(self) -> list[float]:
        """Polls with nothing new in-process, on connections kept open per folder (the daemon's way)."""
        settings = load_settings(self.config, environ=self.env)
        mailbox = settings.mailboxes[0]
        team = Team.of(settings.team, settings.mailboxes)
        engine = make_engine(settings.database.url)
        connections = MailboxConnections(mailbox)
        try:
            sessions = make_sessionmaker(engine)
            return _timed_polls(
                lambda: sync_mailbox(
                    mailbox, sessions, matching=settings.matching, team=team, connections=connections
                )
            )
        finally:
            connections.close()
            engine.dispose()

    def drop(self) -> None:
        if self.pg_name is not None:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


class _TreeMemory:
    """Peak memory of a process and its children (the parser processes), read from /proc every 20 ms.

    Each process's VmHWM is its own peak RSS since it started its program (exec gives a fresh count), so
    unlike wait4's ru_maxrss it does not carry over the memory of the process that started it. `peak_mb` is
    the sum of the peaks of the sync and of every parser process it ran at once (an upper bound: they need
    not peak together); `sampled_mb` the largest sum of their RSS seen at one instant.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}  # pid -> VmHWM, KiB
        self.sampled_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def main_mb(self) -> float:
        return self.peaks.get(self.pid, 0) / 1024

    @property
    def peak_mb(self) -> float:
        workers = sorted((kib for pid, kib in self.peaks.items() if pid != self.pid), reverse=True)
        return (self.peaks.get(self.pid, 0) + sum(workers[: self.max_children])) / 1024

    def start(self) -> None:
        self.max_children = 0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = 0
            children = _children(self.pid)
            self.max_children = max(self.max_children, len(children))
            for pid in [self.pid, *children]:
                rss, hwm = _memory_kib(pid)
                total += rss
                if hwm:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
            self.sampled_mb = max(self.sampled_mb, total / 1024)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; zeros once it is gone."""
    rss = hwm = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _pg_admin(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


# -- the run -------------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[str] = []
        header = f"{'measure':<58} {'value':>16} {'target':>14} {'ratio':>7}  verdict"
        self.rows += [header, "-" * len(header)]

    def row(
        self, name: str, value: str, target: str = "", ratio: float | None = None, ok: bool | None = None
    ) -> None:
        ratio_text = f"{ratio:.2f}" if ratio is not None else ""
        verdict = "" if ok is None else ("meets" if ok else "MISSES")
        self.rows.append(f"{name:<58} {value:>16} {target:>14} {ratio_text:>7}  {verdict}")
        print(self.rows[-1], file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, default=10_000, help="size of the all-logged and mixed mailboxes"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="first syncs of the all-logged mailbox per database"
    )
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    loads: list[float] = [os.getloadavg()[0]]
    server = start_dovecot()
    workdir = Path(tempfile.mkdtemp(prefix="threadline-bench-ingest-"))
    workspaces: list[Workspace] = []
    kinds = ["sqlite"] if args.skip_postgres else ["sqlite", "postgresql"]
    report = Report()

    def workspace(kind: str, user: str, matching: str = "") -> Workspace:
        made = Workspace(kind, workdir, server, user, args.seed)
        workspaces.append(made)
        made.prepare(matching)
        return made

    try:
        print(f"loading {args.messages:,} all-logged messages ...", file=sys.stderr)
        logged = load_generated(server, "allie", args.messages, args.seed, ALL_LOGGED)
        mean_kb = logged.bytes / logged.messages / 1024
        report.row(f"all-logged mailbox: {logged.messages:,} messages, mean KB", f"{mean_kb:.1f}")

        floors: list[Floor] = []
        if "all-logged" in args.cases or "idle" in args.cases:
            for kind in kinds:
                runs: list[CliRun] = []
                for _ in range(args.runs if "all-logged" in args.cases else 1):
                    # the floor right before each sync: the ratio compares what the same minutes allowed
                    floors.append(measure_floor(server, "allie"))
                    floor = floors[-1]
                    fresh = workspace(kind, "allie")
                    run = fresh.sync()
                    loads.append(os.getloadavg()[0])
                    runs.append(run)
                    rate = run.total("new") / run.wall
                    report.row(
                        f"(a) floor: FETCH + mail-parser, one loop ({floor.fetch_seconds:.1f}+"
                        f"{floor.parse_seconds:.1f} s)",
                        f"{floor.rate:,.0f} msg/s",
                    )
                    report.row("    CPU of the floor, per message",
                               f"{floor.cpu_seconds / floor.messages * 1000:.2f} ms")  # fmt: skip
                    report.row(
                        f"(b) sync --once {kind}: {run.total('logged'):,.0f} of "
                        f"{run.total('new'):,.0f} logged",
                        f"{rate:,.0f} msg/s",
                        f">= {TARGET_RATIO} x floor",
                        rate / floor.rate,
                        rate / floor.rate >= TARGET_RATIO,
                    )
                    report.row(
                        "    CPU of the sync and its parser processes, per message",
                        f"{run.cpu_seconds / max(run.total('new'), 1) * 1000:.2f} ms",
                    )
                ratios = [
                    r.total("new") / r.wall / f.rate for r, f in zip(runs, floors[-len(runs) :], strict=True)
                ]
                report.row(
                    f"    median ratio of {len(runs)} runs on {kind}", f"{statistics.median(ratios):.2f}"
                )
                if "idle" in args.cases:
                    idle = [workspaces[-1].sync() for _ in range(5)]
                    # own time: the pass's `seconds` less the IMAP server's connect and login
                    own = [(r.total("seconds") - r.total("login_seconds")) * 1000 for r in idle]
                    report.row(
                        "    idle sync --once: seconds / of which IMAP connect+login, medians",
                        f"{statistics.median(r.total('seconds') * 1000 for r in idle):.1f} / "
                        f"{statistics.median(r.total('login_seconds') * 1000 for r in idle):.1f} ms",
                    )
                    report.row(
                        f"(c) idle sync --once {kind} at {logged.messages:,}: own time, median of 5",
                        f"{statistics.median(own):.1f} ms",
                        f"<= {TARGET_IDLE_MS:.0f} ms",
                        statistics.median(own) / TARGET_IDLE_MS,
                        statistics.median(own) <= TARGET_IDLE_MS,
                    )
                    report.row("    min-max", f"{min(own):.0f}-{max(own):.0f} ms")
                    kept = workspaces[-1].kept_open_polls()
                    report.row(
                        "    poll on kept-open connections (daemon), median of 20",
                        f"{statistics.median(kept):.1f} ms",
                    )
            if "idle" in args.cases:
                fresh_imap, per_folder = measure_idle_imap(server, "allie")
                report.row(
                    "    IMAP alone: connect+login+STATUS x2", f"{statistics.median(fresh_imap):.1f} ms"
                )
                report.row("    IMAP alone: STATUS, one kept-open connection per folder",
                           f"{statistics.median(per_folder):.1f} ms")  # fmt: skip

        if "memory" in args.cases:
            server.append("allie", "INBOX", [big_message(30)])
            for kind in kinds:
                run = workspace(kind, "allie").sync()
                report.row(
                    f"(d) peak RSS, first sync {kind} with a 30 MB message: sync alone",
                    f"{run.main_rss_mb:.0f} MB",
                    f"< {TARGET_RSS_MB:.0f} MB",
                    run.main_rss_mb / TARGET_RSS_MB,
                    run.main_rss_mb < TARGET_RSS_MB,
                )
                report.row(
                    "    sync + its parser processes (sum of their peaks)",
                    f"{run.tree_rss_mb:.0f} MB",
                    f"< {TARGET_RSS_MB:.0f} MB",
                    run.tree_rss_mb / TARGET_RSS_MB,
                    run.tree_rss_mb < TARGET_RSS_MB,
                )
                report.row("    largest sum of their RSS at one instant", f"{run.sampled_rss_mb:.0f} MB")

        if "mixed" in args.cases:
            print(f"loading {args.messages:,} mixed messages ...", file=sys.stderr)
            mixed = load_generated(server, "sam", args.messages, args.seed, MIX)
            floor = measure_floor(server, "sam")
            for kind in kinds:
                run = workspace(kind, "sam").sync()
                rate = run.total("new") / run.wall
                report.row(
                    f"(e) mixed mailbox {kind}: {int(run.total('logged')):,} of {mixed.messages:,} logged",
                    f"{rate:,.0f} msg/s",
                    "",
                    rate / floor.rate,
                )

        if "hostile" in args.cases:
            server.add_user("hostile", uuid.uuid4().hex)
            normal = generate_mailbox(200, team_domain=TEAM_DOMAIN, seed=args.seed, mix=ALL_LOGGED).messages
            hostile = hostile_messages()
            mailbox: list[bytes] = []
            for index, message in enumerate(normal):
                mailbox.append(message.raw)
                if index % 20 == 10 and hostile:
                    mailbox.append(hostile.pop(0))
            mailbox.extend(hostile)
            server.append("hostile", "INBOX", mailbox)
            server.empty_message_file("hostile", "INBOX", "lost by the server")
            for kind in kinds:
                run = workspace(kind, "hostile", "parse_timeout_seconds = 5").sync()
                result = run.results()[0]
                accounted = (
                    int(str(result["logged"])) + int(str(result["skipped"])) + int(str(result["quarantined"]))
                )
                report.row(
                    f"(f) hostile mailbox {kind}: {len(mailbox)} messages, wall",
                    f"{run.wall:.1f} s",
                    "< 60 s",
                    run.wall / 60,
                    run.wall < 60 and accounted == int(str(result["new"])),
                )
                report.row(
                    "    logged / skipped / quarantined; peak RSS (sync + parsers)",
                    f"{result['logged']} / {result['skipped']} / {result['quarantined']}; "
                    f"{run.tree_rss_mb:.0f} MB",
                )
        loads.append(os.getloadavg()[0])
    finally:
        for made in workspaces:
            made.drop()
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"Ingest benchmark, {time.strftime('%Y-%m-%d %H:%M')}: load average (1 min) "
          f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")  # fmt: skip
    for line in report.rows:
        print(line)
    return 0


def _timed_polls(poll: Callable[[], SyncResult]) -> list[float]:
    """Milliseconds of IDLE_REPEATS polls that must find nothing new, after one untimed warm-up."""
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
