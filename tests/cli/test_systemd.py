"""systemd notifications for real: the panel and the daemon, run as processes, talk to a notify socket the
way they would under a `Type=notify` unit with `WatchdogSec=`: READY=1, watchdog pings, STOPPING=1."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.database import TestDatabase
from threadline import systemd

THREADLINE = [sys.executable, "-m", "threadline"]


class NotifySocket:
    """What systemd listens on: a unix datagram socket collecting every message sent to it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def wait_for(self, wanted: str, timeout: float = 20.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while sum(1 for m in self.messages if m.startswith(wanted)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {wanted!r} within {timeout} s; got {self.messages}")
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def drain(self) -> list[str]:
        """Read whatever has arrived by now."""
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.2)
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # abstract namespace (as systemd uses): no file, no path-length trouble
    listener = NotifySocket(f"@threadline-test-{secrets.token_hex(6)}")
    yield listener
    listener.close()


def start(args: list[str], config: Path, notify: NotifySocket, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*THREADLINE, "--config", str(config), *args],
        env={**os.environ, "NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def config(sqlite_db: TestDatabase, tmp_path: Path) -> Path:
    path = tmp_path / "threadline.toml"
    path.write_text(f'[database]\nurl = "{sqlite_db.url}"\n\n[alerts]\nenabled = false\n', encoding="utf-8")
    return path


def test_the_panel_says_ready_feeds_the_watchdog_and_says_stopping(
    config: Path, notify_socket: NotifySocket
) -> None:
    process = start(["admin", "--port", "0"], config, notify_socket)
    try:
        messages = notify_socket.wait_for("WATCHDOG=1", count=2)
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    ready = messages[0]
    assert ready.startswith("READY=1\nSTATUS=admin panel on http://127.0.0.1:"), messages
    assert messages[1:3] == ["WATCHDOG=1", "WATCHDOG=1"]
    notify_socket.wait_for("STOPPING=1", timeout=5)
    assert "admin panel stopped" in out


def test_the_daemon_says_ready_once_its_scheduler_runs(config: Path, notify_socket: NotifySocket) -> None:
    process = start(["daemon"], config, notify_socket)
    try:
        messages = notify_socket.wait_for("WATCHDOG=1", count=1)
    finally:
        _, err = stop(process)
    assert process.returncode == 0, err
    assert messages[0] == "READY=1\nSTATUS=syncing 0 mailbox(es)"
    notify_socket.wait_for("STOPPING=1", timeout=5)


def test_a_watchdog_meant_for_another_process_or_no_systemd_at_all(config: Path) -> None:
    assert systemd.watchdog_seconds({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert systemd.watchdog_seconds({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_seconds({}) is None
    assert systemd.notify("READY=1", {}) is False
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": "@threadline-nobody-listens"}) is False

    # outside systemd the panel runs exactly as before
    process = subprocess.Popen(
        [*THREADLINE, "--config", str(config), "admin", "--port", "0"],
        env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("admin panel on http://127.0.0.1:")
    out, err = stop(process)
    assert process.returncode == 0 and "admin panel stopped" in out, err


def test_a_process_whose_health_check_fails_stops_feeding_the_watchdog(notify_socket: NotifySocket) -> None:
    healthy = threading.Event()
    healthy.set()
    stopping = threading.Event()
    environ = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "200000"}
    supervisor = systemd.Supervisor(healthy.is_set, stopping, status="test", environ=environ)
    supervisor.start()
    notify_socket.wait_for("WATCHDOG=1", count=3, timeout=10)
    healthy.clear()  # the process hangs: its check fails from now on
    time.sleep(0.5)  # a ping decided just before that may still be on its way
    pings = notify_socket.drain().count("WATCHDOG=1")
    time.sleep(1.0)  # five watchdog intervals
    assert notify_socket.drain().count("WATCHDOG=1") == pings
    stopping.set()
    supervisor.join(timeout=5)
    assert notify_socket.wait_for("STOPPING=1", timeout=5)[-1] == "STOPPING=1"
