"""Three `threadline daemon` processes, one PostgreSQL, several Dovecot mailboxes: each mailbox's IMAP
sessions are held by one daemon at a time (counted from the kernel's sockets), a kill -9 loses and doubles
nothing, a daemon whose lease connection the server ends drops its sessions at once, a fourth daemon takes
its share; status and metrics name every holder. On SQLite a second daemon refuses to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from dataclasses import replace
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text

from admin.app import create_app
from models.schema import Activity
from settings import MetricsSettings, Secret, load_settings
from tests.fixtures.cluster import (
    THREADLINE,
    cluster_env,
    holders_by_user,
    imap_sessions,
    start_daemon,
    wait_for,
    write_cluster_config,
)
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import *  # noqa: F403
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW

MAILBOXES = 6
TOKEN = "cluster-metrics-token-0123456789"


def inbound(user: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Pat Prospect <pat@prospect.example>"
    msg["To"] = f"{user}@team.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(NOW)
    msg["Message-ID"] = make_msgid(domain="prospect.example")
    msg.set_content(f"Hello, about {subject}.")
    return bytes(msg)


def subjects(db: TestDatabase) -> Counter[str]:
    with db.sessions() as session:
        return Counter(session.scalars(select(Activity.subject)))


def activity_count(db: TestDatabase) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count(Activity.id))) or 0)


@pytest.fixture
def processes():
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_three_daemons_share_mailboxes_one_holder_each_and_survive_kill_and_lost_connection(
    pg_db: TestDatabase, dovecot: DovecotServer, mailbox_user, processes, tmp_path: Path
) -> None:
    users = [mailbox_user()[0] for _ in range(MAILBOXES)]
    for user in users:
        dovecot.append(user, "INBOX", [inbound(user, f"first {user}")])
    config = write_cluster_config(tmp_path / "threadline.toml", pg_db.url, dovecot, users)
    env = cluster_env(dovecot, users)
    logs = [tmp_path / f"daemon{i}.log" for i in range(4)]
    processes.extend(start_daemon(config, env, logs[i]) for i in range(3))
    pids = [p.pid for p in processes]

    def sessions() -> dict[int, Counter[str]]:
        return imap_sessions(dovecot, [p.pid for p in processes if p.poll() is None])

    def one_holder_each(expected_pids: list[int], most: int) -> bool:
        found = sessions()
        holders = holders_by_user(found)
        return (
            set(holders) == set(users)
            and all(len(h) == 1 for h in holders.values())
            and all(0 < len(found[pid]) <= most for pid in expected_pids)
        )

    wait_for(lambda: activity_count(pg_db) == MAILBOXES, 60, "every mailbox's first message to be logged")
    wait_for(lambda: one_holder_each(pids, 2), 60, "each mailbox held by one daemon, two per daemon")
    # steady state: checked again a few times, never two daemons on one mailbox
    for _ in range(5):
        holders = holders_by_user(sessions())
        assert all(len(h) == 1 for h in holders.values()), holders

    # status names the holder of every mailbox and the three live daemons
    status = run_cli(config, env, "status", "--json")
    assert status["ok"] is True, status
    live = [d for d in status["daemons"] if d["alive"]]
    assert sorted(d["pid"] for d in live) == sorted(pids)
    assert all(d["mailboxes"] == 2 for d in live)
    by_label = {d["daemon"]: d["pid"] for d in live}
    found = sessions()
    for mailbox in status["mailboxes"]:
        holder_pid = by_label[mailbox["holder"]]
        assert mailbox["name"] in found[holder_pid], "status must name the daemon that holds the sessions"
        assert mailbox["idle_connected"] is True

    # metrics say the same
    settings = replace(
        load_settings(config, {**os.environ, **env}), metrics=MetricsSettings(token=Secret(TOKEN, "t"))
    )
    response = (
        create_app(settings, pg_db.sessions)
        .test_client()
        .get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("threadline_daemons_alive", ())] == 3
    for mailbox in status["mailboxes"]:
        name, holder = mailbox["name"], mailbox["holder"]
        assert samples[("threadline_mailbox_lease_holder", (("daemon", holder), ("mailbox", name)))] == 1
        assert samples[("threadline_mailbox_idle_connected", (("mailbox", name),))] == 1
        # the pass that fetched its first message: how long it took and how much it fetched
        assert samples[("threadline_mailbox_last_pass_seconds", (("mailbox", name),))] > 0
        assert samples[("threadline_mailbox_last_pass_messages", (("mailbox", name),))] == 1
        assert mailbox["last_pass_messages"] == 1
    for label, pid in by_label.items():
        key = (("daemon", label), ("host", label.split(":")[0]), ("pid", str(pid)))
        assert samples[("threadline_daemon_up", key)] == 1
        assert samples[("threadline_daemon_mailboxes", key)] == 2

    # kill -9 the holder of the first mailbox; new mail there is logged by another daemon within 30 s
    target = users[0]
    victim = next(p for p in processes if target in sessions()[p.pid])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    dovecot.append(target, "INBOX", [inbound(target, f"after the kill {target}")])
    took = wait_for(lambda: subjects(pg_db)[f"after the kill {target}"] == 1, 30, "another daemon to log it")
    assert took < 30
    survivors = [p.pid for p in processes if p.poll() is None]
    wait_for(lambda: one_holder_each(survivors, 3), 30, "the dead daemon's mailboxes to be shared out")

    # the server ends one survivor's lease connection: it drops its IMAP sessions at once
    cut = survivors[0]
    before = sessions()[cut]
    assert before
    admin = create_engine(pg_db.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        backend = conn.execute(
            text("SELECT backend_pid FROM daemons WHERE pid = :pid AND stopped_at IS NULL"), {"pid": cut}
        ).scalar_one()
        conn.execute(text("SELECT pg_terminate_backend(:b)"), {"b": backend})
    admin.dispose()
    wait_for(lambda: not set(before) & set(sessions()[cut]), 5, "the cut daemon to drop its mailboxes")
    assert "lease connection lost" in logs[pids.index(cut)].read_text()

    # a fourth daemon joins: every daemon ends with its share (6 over 3 live: 2 each), one holder each
    processes.append(start_daemon(config, env, logs[3]))
    joined = [p.pid for p in processes if p.poll() is None]
    wait_for(lambda: one_holder_each(joined, 2), 60, "the new daemon to take its share")

    # nothing lost, nothing doubled
    for user in users:
        dovecot.append(user, "INBOX", [inbound(user, f"last {user}")])
    wait_for(lambda: activity_count(pg_db) == 2 * MAILBOXES + 1, 30, "the last messages")
    assert all(count == 1 for count in subjects(pg_db).values()), subjects(pg_db)

    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        if proc is not victim:
            assert proc.wait(timeout=60) == 0


def test_on_sqlite_a_second_daemon_refuses_to_start_with_one_line(
    sqlite_db: TestDatabase, dovecot: DovecotServer, mailbox_user, processes, tmp_path: Path
) -> None:
    users = [mailbox_user()[0]]
    config = write_cluster_config(tmp_path / "threadline.toml", sqlite_db.url, dovecot, users)
    env = cluster_env(dovecot, users)
    processes.append(start_daemon(config, env, tmp_path / "first.log"))
    wait_for(lambda: imap_sessions(dovecot, [processes[0].pid])[processes[0].pid], 30, "the first daemon")
    second = subprocess.run(
        [*THREADLINE, "--config", str(config), "daemon"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("threadline: another daemon is already running on ")
    assert f"pid {processes[0].pid}" in lines[0] and "PostgreSQL" in lines[0]
    first = processes[0].pid
    assert imap_sessions(dovecot, [first])[first][users[0]] >= 1, "the first daemon goes on syncing"


def run_cli(config: Path, env: dict[str, str], *args: str) -> Any:
    result = subprocess.run(
        [*THREADLINE, "--config", str(config), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return json.loads(result.stdout)
