"""Scale benchmark: many mailboxes (Dovecot users) over several `threadline daemon` processes on PostgreSQL.

    .venv/bin/python -m bench.scale [--mailboxes 200] [--daemons 3] [--idle-seconds 30] [--mail-seconds 30]

Measures, and prints with the command line:
- time from starting the daemons until every mailbox has a holder, and until every mailbox's first message
  is logged;
- IMAP connections per daemon (counted from the kernel's sockets, matched to Dovecot users);
- CPU (percent of one core) and memory (RSS of the daemon and its parser processes) per daemon, at idle
  and while new mail arrives in every mailbox;
- takeover after kill -9 of one daemon: until each of its mailboxes has a new holder with IDLE up, and
  until a message sent to one of them just after the kill is logged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from models import migrate
from models.db import make_engine, make_sessionmaker
from models.leases import read_holders
from models.schema import Activity, MailboxStatus
from tests.fixtures.cluster import cluster_env, imap_sessions, start_daemon, wait_for, write_cluster_config
from tests.fixtures.dovecot import DovecotServer

PG_ADMIN_URL = os.environ.get(
    "THREADLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def message(user: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Pat Prospect <pat@prospect.example>"
    msg["To"] = f"{user}@team.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="prospect.example")
    msg.set_content(f"Hello, about {subject}.\n" + "Some words of a real email. " * 40)
    return bytes(msg)


# -- processes ---------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Usage:
    cpu_percent: float  # of one core, the daemon and its parser processes together
    rss_mb: float  # the daemon's own
    tree_rss_mb: float  # with its parser processes


def measure(pids: Sequence[int], seconds: float) -> dict[int, Usage]:
    """CPU over `seconds` and memory at the end, for each daemon with its children."""
    trees = {pid: [pid, *_children(pid)] for pid in pids}
    before = {pid: sum(_cpu_ticks(p) for p in tree) for pid, tree in trees.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    usage = {}
    for pid in pids:
        tree = [pid, *_children(pid)]
        ticks = sum(_cpu_ticks(p) for p in tree) - before[pid]
        usage[pid] = Usage(
            cpu_percent=100.0 * ticks / CLOCK_TICKS / elapsed,
            rss_mb=_rss_kib(pid) / 1024,
            tree_rss_mb=sum(_rss_kib(p) for p in tree) / 1024,
        )
    return usage


# -- the run -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--mail-seconds", type=float, default=30.0, help="how long new mail keeps arriving")
    parser.add_argument(
        "--mail-rate", type=float, default=20.0, help="new messages per second, all mailboxes"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-logs", type=Path, help="copy the daemons' logs into this directory")
    args = parser.parse_args(argv)
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])

    root = Path(tempfile.mkdtemp(prefix="threadline-bench-scale-"))
    root.chmod(0o755)
    server = DovecotServer(
        root, shutil.which("dovecot") or "/usr/sbin/dovecot", shutil.which("doveadm") or "doveadm"
    )
    with open(server.config_file, "a") as config:  # a few hundred logins at once, three connections each
        config.write("\ndefault_process_limit = 2000\ndefault_client_limit = 10000\n")
    server.start()
    database = f"threadline_bench_scale_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    processes: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {
        "command": command,
        "mailboxes": args.mailboxes,
        "daemons": args.daemons,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
    }

    def logged() -> int:
        with sessions() as session:
            return int(session.scalar(select(func.count(Activity.id))) or 0)

    def holders() -> dict[str, int | None]:
        for n, proc in enumerate(processes):
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                tail = (root / f"daemon{n}.log").read_text().splitlines()[-5:]
                raise SystemExit(f"daemon {n} exited with {proc.returncode}:\n" + "\n".join(tail))
        with sessions() as session:
            return dict(read_holders(session, users, now=datetime.now(UTC)).mailboxes)

    def idle_up() -> set[str]:
        found = holders()
        with sessions() as session:
            rows = session.execute(select(MailboxStatus.mailbox, MailboxStatus.idle_daemon_id)).all()
        return {name for name, daemon in rows if daemon is not None and found.get(name) == daemon}

    try:
        users = [f"box{n:04d}" for n in range(args.mailboxes)]
        for user in users:
            server.add_user(user, uuid.uuid4().hex[:16])
            server.append(user, "INBOX", [message(user, f"first {user}")])
        config = write_cluster_config(root / "threadline.toml", url, server, users, poll_seconds=300)
        env = cluster_env(server, users)

        began = time.monotonic()
        processes.extend(start_daemon(config, env, root / f"daemon{i}.log") for i in range(args.daemons))
        pids = [p.pid for p in processes]
        all_held = wait_for(lambda: all(h is not None for h in holders().values()), 600, "every holder", 0.2)
        all_logged = wait_for(lambda: logged() >= args.mailboxes, 600, "first messages", 0.2)
        wait_for(lambda: len(idle_up()) == args.mailboxes, 600, "every IDLE up", 0.2)
        all_idle = time.monotonic() - began
        results["seconds_until_every_mailbox_held"] = round(all_held, 1)
        results["seconds_until_every_first_message_logged"] = round(all_held + all_logged, 1)
        results["seconds_until_every_idle_up"] = round(all_idle, 1)

        time.sleep(5)  # let the last polls finish
        sessions_now = imap_sessions(server, pids)
        results["connections_per_daemon"] = {str(pid): sum(c.values()) for pid, c in sessions_now.items()}
        results["mailboxes_per_daemon"] = {str(pid): len(c) for pid, c in sessions_now.items()}
        shared = sum(1 for u in users if sum(1 for c in sessions_now.values() if u in c) > 1)
        results["mailboxes_with_two_daemons"] = shared

        idle = measure(pids, args.idle_seconds)
        results["idle"] = {str(pid): u.__dict__ for pid, u in idle.items()}

        # new mail: args.mail_rate messages a second spread over every mailbox, while CPU is measured
        sent = 0
        target_total = args.mailboxes + int(args.mail_rate * args.mail_seconds)
        import threading

        def deliver() -> None:
            nonlocal sent
            start = time.monotonic()
            count = int(args.mail_rate * args.mail_seconds)
            for n in range(count):
                user = users[n % len(users)]
                server.append(user, "INBOX", [message(user, f"wave {n} {user}")])
                sent += 1
                delay = start + (n + 1) / args.mail_rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        sender = threading.Thread(target=deliver)
        sender.start()
        busy = measure(pids, args.mail_seconds)
        sender.join()
        caught_up = wait_for(lambda: logged() >= target_total, 300, "the wave to be logged", 0.2)
        results["busy"] = {str(pid): u.__dict__ for pid, u in busy.items()}
        results["wave_messages"] = sent
        results["seconds_after_wave_until_all_logged"] = round(caught_up, 1)

        if args.daemons < 2:
            return _report(results, args.json)
        # takeover: kill -9 the daemon with the most mailboxes
        per_daemon = imap_sessions(server, pids)
        victim = max(processes, key=lambda p: len(per_daemon[p.pid]))
        orphans = sorted(per_daemon[victim.pid])
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.monotonic()
        probe = orphans[0]
        server.append(probe, "INBOX", [message(probe, "after the kill")])
        with sessions() as session:
            dead_id = next(
                d.id
                for d in read_holders(session, users, now=datetime.now(UTC)).daemons
                if d.pid == victim.pid
            )

        def taken_over() -> bool:
            found = holders()
            return all(found[u] is not None and found[u] != dead_id for u in orphans)

        wait_for(taken_over, 120, "the dead daemon's mailboxes to be held again", 0.1)
        results["takeover_seconds_every_mailbox_held"] = round(time.monotonic() - killed, 1)

        def probe_logged() -> bool:
            with sessions() as session:
                return bool(
                    session.scalar(
                        select(func.count(Activity.id)).where(Activity.subject == "after the kill")
                    )
                )

        wait_for(probe_logged, 120, "the message sent after the kill", 0.1)
        results["takeover_seconds_new_mail_logged"] = round(time.monotonic() - killed, 1)
        wait_for(lambda: set(orphans) <= idle_up(), 300, "IDLE up again on every taken mailbox", 0.2)
        results["takeover_seconds_every_idle_up"] = round(time.monotonic() - killed, 1)
        results["orphaned_mailboxes"] = len(orphans)
        survivors = [p.pid for p in processes if p.poll() is None]
        after = imap_sessions(server, survivors)
        results["connections_per_daemon_after_kill"] = {str(pid): sum(c.values()) for pid, c in after.items()}
        with sessions() as session:
            duplicates = session.execute(
                select(Activity.subject, func.count(Activity.id))
                .group_by(Activity.subject)
                .having(func.count() > 1)
            ).all()
        results["duplicated_activities"] = len(duplicates)
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in root.glob("daemon*.log"):
                shutil.copy(log, args.keep_logs / log.name)
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    return _report(results, args.json)


def _report(results: dict[str, object], path: Path | None) -> int:
    results["load_average_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    if path is not None:
        path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
