"""Fixtures for driving the `threadline` command in-process on the test database (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.fixtures.dovecot import oauth_dovecot  # noqa: F401 (the mailbox sign-in tests' IMAP server)
from threadline.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


Run = Callable[..., Result]


def write_config(path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file pointing at `url`; a URL with a password goes through url_env, as the config demands."""
    if make_url(url).password:
        monkeypatch.setenv("THREADLINE_TEST_CLI_DB_URL", url)
        database = 'url_env = "THREADLINE_TEST_CLI_DB_URL"'
    else:
        database = f'url = "{url}"'
    path.write_text(f'[database]\n{database}\n\n[logging]\nlevel = "WARNING"\n', encoding="utf-8")
    return path


@pytest.fixture
def cli_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Run]]:
    """cli_for(url) -> run(*args, stdin=None): runs `threadline --config <file for url> args...`."""

    def for_url(url: str) -> Run:
        config = write_config(tmp_path / f"threadline-{abs(hash(url))}.toml", url, monkeypatch)

        def run(*args: str, stdin: str | None = None) -> Result:
            capsys.readouterr()
            if stdin is not None:
                monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
            code = main(["--config", str(config), *args])
            captured = capsys.readouterr()
            return Result(code, captured.out, captured.err)

        return run

    yield for_url
    # the CLI's log handler writes to this test's captured stderr: don't leave it behind for other tests
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_threadline", False):
            root.removeHandler(handler)


@pytest.fixture
def cli(db, cli_for: Callable[[str], Run]) -> Run:  # type: ignore[no-untyped-def]
    """Run the command against the `db` fixture's database (so each test runs on SQLite and PostgreSQL)."""
    return cli_for(db.url)


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(name: str, text: str, *, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return write
