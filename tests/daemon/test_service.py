"""The `threadline daemon` process, for real: a subprocess against Dovecot, stopped with signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.schema import Activity, MailboxStatus
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import *  # noqa: F403
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW

THREADLINE = [sys.executable, "-m", "threadline"]


def inbound(sender: str, to: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Pat Prospect <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(NOW)
    msg["Message-ID"] = make_msgid(domain="prospect.example")
    msg.set_content(f"Hello, about {subject}.")
    return bytes(msg)


def write_config(tmp_path: Path, db: TestDatabase, mailboxes: list[dict[str, object]]) -> Path:
    blocks = []
    for mailbox in mailboxes:
        lines = ["[[mailboxes]]"]
        for key, value in mailbox.items():
            rendered = (
                str(value).lower()
                if isinstance(value, bool)
                else (str(value) if isinstance(value, int) else f'"{value}"')
            )
            lines.append(f"{key} = {rendered}")
        blocks.append("\n".join(lines))
    config = tmp_path / "threadline.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n\n[team]\ndomains = ["team.example"]\n\n'
        '[matching]\ncreate_contacts = "sent_and_received"\n\n[alerts]\nenabled = false\n\n'
        + "\n\n".join(blocks)
    )
    return config


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*THREADLINE, "--config", str(config), "daemon"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def activity_count(db: TestDatabase) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count(Activity.id))) or 0


def test_idle_brings_new_mail_within_seconds_and_sigterm_stops_cleanly(
    sqlite_db: TestDatabase, dovecot: DovecotServer, mailbox_user, daemon_process, tmp_path: Path
) -> None:
    user, password = mailbox_user()
    dovecot.append(user, "INBOX", [inbound("pat@prospect.example", f"{user}@team.example", "First contact")])
    config = write_config(
        tmp_path,
        sqlite_db,
        [
            {
                "name": "jane",
                "host": dovecot.host,
                "port": dovecot.port,
                "security": "none",
                "username": user,
                "password_env": "JANE_PW",
                "poll_seconds": 3600,
                "idle": True,
                "address": f"{user}@team.example",
            }
        ],
    )
    proc = daemon_process(config, {"JANE_PW": password})
    wait_for(lambda: activity_count(sqlite_db) == 1, 20, "the first sync to log the waiting message")

    # the next poll is an hour away: only IDLE can bring this one in
    time.sleep(1.0)
    dovecot.append(
        user, "INBOX", [inbound("pat@prospect.example", f"{user}@team.example", "Pricing question")]
    )
    seconds = wait_for(lambda: activity_count(sqlite_db) == 2, 15, "IDLE to bring in the new message")
    assert seconds < 10

    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert time.monotonic() - began < 10
    assert "jane: 1 new, 1 logged" in output
    with sqlite_db.sessions() as session:
        subjects = set(session.scalars(select(Activity.subject)))
    assert subjects == {"First contact", "Pricing question"}


def test_a_failing_mailbox_does_not_stop_the_others(
    sqlite_db: TestDatabase, dovecot: DovecotServer, mailbox_user, daemon_process, tmp_path: Path
) -> None:
    good, good_pw = mailbox_user()
    bad, _ = mailbox_user()
    dovecot.append(
        good, "INBOX", [inbound("lee@client.example", f"{good}@team.example", "Still on for Tuesday?")]
    )
    config = write_config(
        tmp_path,
        sqlite_db,
        [
            {
                "name": "bad",
                "host": dovecot.host,
                "port": dovecot.port,
                "security": "none",
                "username": bad,
                "password_env": "BAD_PW",
                "poll_seconds": 1,
                "idle": False,
            },
            {
                "name": "good",
                "host": dovecot.host,
                "port": dovecot.port,
                "security": "none",
                "username": good,
                "password_env": "GOOD_PW",
                "poll_seconds": 2,
                "idle": False,
            },
        ],
    )
    proc = daemon_process(config, {"BAD_PW": "wrong password", "GOOD_PW": good_pw})
    wait_for(lambda: activity_count(sqlite_db) == 1, 20, "the good mailbox to sync")

    def bad_recorded() -> bool:
        with sqlite_db.sessions() as session:
            status = session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == "bad"))
            return status is not None and status.last_error is not None

    wait_for(bad_recorded, 10, "the bad mailbox's error to be recorded")
    time.sleep(4)  # several poll intervals pass: the failing mailbox must back off, not hammer
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    with sqlite_db.sessions() as session:
        status = session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == "bad"))
        assert status is not None and status.last_error is not None
        assert "auth" in status.last_error.lower() or "login" in status.last_error.lower()
        assert status.next_attempt_at is not None
        assert status.consecutive_failures <= 2, (
            "an authentication failure must back off, not retry every second"
        )
    assert "wrong password" not in output
