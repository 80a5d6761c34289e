"""`threadline admin`: serves the panel with waitress until interrupted, then exits 0."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.fixtures.database import TestDatabase


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_threadline_admin_serves_until_interrupted(sqlite_db: TestDatabase, tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text(f'[database]\nurl = "{sqlite_db.url}"\n', encoding="utf-8")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "threadline", "--config", str(config), "admin", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith(f"admin panel on http://127.0.0.1:{port}/"), first_line
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            opener.open(f"http://127.0.0.1:{port}/admin/board/", timeout=10)
            raise AssertionError("expected a redirect to the login page")
        except urllib.error.HTTPError as exc:
            assert exc.code == 302 and exc.headers["Location"].endswith("/login?next=/admin/board/")
            exc.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10) as response:
            assert b'name="password"' in response.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "admin panel stopped" in out
    secret = Path(sqlite_db.url.removeprefix("sqlite:///")).parent / ".threadline-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
