"""A real admin panel under waitress on a loopback port, and a real Chromium driven by Playwright."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from admin.app import create_app, serve
from models.db import transaction
from models.users import create_user
from settings import AdminSettings, DatabaseSettings, Secret, Settings
from tests.fixtures.database import TestDatabase, missing_part
from tests.fixtures.factories import NOW

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "test-output"
ADMIN_EMAIL, ADMIN_PASSWORD = "boss@team.example", "correct horse battery"


@dataclass
class LiveServer:
    url: str
    db: TestDatabase


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(sqlite_db: TestDatabase) -> Iterator[LiveServer]:
    with transaction(sqlite_db.sessions) as session:
        create_user(session, ADMIN_EMAIL, name="Bea Boss", role="admin", password=ADMIN_PASSWORD, now=NOW)
    settings = Settings(
        source="e2e",
        database=DatabaseSettings(url=sqlite_db.url),
        admin=AdminSettings(secret_key=Secret("e" * 48, "test")),
    )
    app = create_app(settings, sqlite_db.sessions)
    port = _free_port()
    stop = threading.Event()
    ready = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(app, "127.0.0.1", port, threads=8, stop_event=stop, on_ready=lambda h, p: ready.set())
        except BaseException as exc:  # reported by the fixture below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="admin-under-test", daemon=True)
    thread.start()
    assert ready.wait(10) and not errors, errors
    yield LiveServer(f"http://127.0.0.1:{port}", sqlite_db)
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "the server did not stop"
    assert not errors, errors


@pytest.fixture
def browser_page() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_part("the playwright package is not installed (pip install playwright; no browser download)")
    if not CHROMIUM.exists():
        missing_part(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    OUTPUT_DIR.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
