"""Telling systemd how a long-running process is doing: ready, watchdog pings, stopping (sd_notify(3)).

Only under a `Type=notify` unit, where systemd sets $NOTIFY_SOCKET; anywhere else this does nothing. The
protocol is one datagram of `KEY=VALUE` lines on that unix socket (a name starting with '@' is in the
abstract namespace), which is all sd_notify does, so no library is needed for it.

`Supervisor` is a thread that sends READY=1 once the process's own health check first passes (the panel
answers its /healthz, the daemon's scheduler runs), then, when the unit sets `WatchdogSec=`, WATCHDOG=1 at
half that interval for as long as the check keeps passing: a process that hangs stops pinging and systemd
restarts it. When the process is asked to stop it sends STOPPING=1.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

log = logging.getLogger("threadline.systemd")

Check = Callable[[], bool]
_READY_POLL_SECONDS = 0.2


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send one state message to systemd; False when not run by systemd or the socket is gone."""
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.debug("cannot notify systemd (%s): %s", state.split("=", 1)[0], exc)
        return False
    return True


def watchdog_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """The unit's WatchdogSec for this process, or None when it has none (or it is meant for another pid)."""
    environ = os.environ if environ is None else environ
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Supervisor(threading.Thread):
    """READY=1 when `check` first passes, WATCHDOG=1 while it keeps passing, STOPPING=1 on `stop`."""

    def __init__(
        self,
        check: Check,
        stop: threading.Event,
        *,
        status: str = "",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name="systemd-notify", daemon=True)
        self.check = check
        self.stop = stop
        self.status = status
        self.environ = dict(os.environ if environ is None else environ)
        watchdog = watchdog_seconds(self.environ)
        self.ping_every = watchdog / 2 if watchdog else None

    def run(self) -> None:
        while not self._healthy():
            if self.stop.wait(_READY_POLL_SECONDS):
                return self._stopping()
        ready = "READY=1" + (f"\nSTATUS={self.status}" if self.status else "")
        notify(ready, self.environ)
        if self.ping_every is None:
            self.stop.wait()
            return self._stopping()
        while not self.stop.wait(self.ping_every):
            if self._healthy():
                notify("WATCHDOG=1", self.environ)
            else:
                log.warning("health check failed: not pinging the systemd watchdog")
        return self._stopping()

    def _healthy(self) -> bool:
        try:
            return bool(self.check())
        except Exception:
            log.exception("health check raised")
            return False

    def _stopping(self) -> None:
        notify("STOPPING=1", self.environ)


def supervise(check: Check, stop: threading.Event, *, status: str = "") -> Supervisor | None:
    """Start a Supervisor when systemd is listening ($NOTIFY_SOCKET); None otherwise."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    supervisor = Supervisor(check, stop, status=status)
    supervisor.start()
    return supervisor


def answers_healthz(host: str, port: int, *, timeout: float = 5.0) -> bool:
    """Whether the panel at host:port serves its /healthz (the wildcard addresses are asked on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy
    try:
        with direct.open(f"http://{netloc}/healthz", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False
