"""`threadline backup` and `threadline restore`: a real round trip on SQLite and PostgreSQL, and the refusals.

The round trip compares what a user can see (every `threadline export` kind) and, stricter, every row of
every table, between the database that was backed up and a fresh one restored from the file.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from models import migrate
from models.db import make_engine, transaction
from models.mailboxes import MailboxFields, create_mailbox
from models.schema import Base
from models.secrets import generate_key, secret_box
from settings import Secret, Settings, load_settings
from tests.cli.conftest import Result
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW
from tests.fixtures.operations import *  # noqa: F403
from tests.fixtures.operations import Team
from threadline.backup import BackupError, pg_tool
from threadline.cli import build_parser, main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    def run(config: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def fresh_url(db: TestDatabase, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the same kind as `db`, to restore into."""
    if db.kind == "sqlite":
        return f"sqlite:///{tmp_path / 'restored' / 'threadline.db'}"
    return str(request.getfixturevalue("pg_url"))


def export_kinds() -> list[str]:
    parser = build_parser()
    export = next(
        action.choices["export"]  # type: ignore[index]
        for action in parser._actions
        if getattr(action, "choices", None) and "export" in action.choices  # type: ignore[operator]
    )
    return list(next(a.choices for a in export._actions if a.dest == "what"))


def exports(run, config: Path) -> dict[str, str]:
    found = {}
    for kind in export_kinds():
        result = run(config, "export", kind, "--format", "jsonl")
        assert result.code == 0, result.err
        found[kind] = result.out
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime | date | Decimal):
        return str(value)
    return value


def every_row(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = {}
            for table in Base.metadata.sorted_tables:
                order = ", ".join(c.name for c in table.primary_key.columns) or "1"
                rows = conn.execute(text(f'SELECT * FROM "{table.name}" ORDER BY {order}'))
                tables[table.name] = [tuple(_plain(v) for v in row) for row in rows]
            tables["alembic_version"] = [
                tuple(r) for r in conn.execute(text("SELECT * FROM alembic_version"))
            ]
            return tables
    finally:
        engine.dispose()


def test_round_trip_keeps_every_export_and_every_row(
    demo_team_database: Team, run, fresh_url: str, tmp_path: Path
) -> None:
    team = demo_team_database
    before = exports(run, team.config)
    assert len(before) >= 5 and all(
        before[kind] for kind in ("contacts", "deals", "activities", "quarantine")
    )
    rows_before = every_row(team.db.url)
    assert rows_before["quarantine"] and rows_before["notifications"] and rows_before["attachments"]

    backup_file = tmp_path / "backups" / "threadline.backup"
    backup_file.parent.mkdir()
    made = run(team.config, "backup", str(backup_file))
    assert made.code == 0, made.err
    assert made.out.startswith(f"backup of the {team.db.kind} database written to {backup_file}")
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600  # it holds every record of the CRM
    assert os.listdir(backup_file.parent) == ["threadline.backup"]  # no partial file left behind

    restored_config = team.write_config(tmp_path / "restored.toml", fresh_url)
    restored = run(restored_config, "restore", str(backup_file))
    assert restored.code == 0, restored.err
    assert restored.out.startswith(f"restored the {team.db.kind} database (schema revision ")
    assert restored.err == ""  # the schema is current: nothing to upgrade
    assert exports(run, restored_config) == before
    assert every_row(fresh_url) == rows_before
    assert run(restored_config, "db", "status").code == 0

    # a database holding data is not replaced unless asked; with --force it is, whole
    changed = make_engine(fresh_url)
    with changed.begin() as conn:
        conn.execute(text("DELETE FROM tasks"))
    changed.dispose()
    refused = run(restored_config, "restore", str(backup_file))
    assert refused.code == 1 and "already holds data" in refused.err and "add --force" in refused.err
    forced = run(restored_config, "restore", "--force", str(backup_file))
    assert forced.code == 0, forced.err
    assert exports(run, restored_config) == before
    assert every_row(fresh_url) == rows_before


def walk_secrets(value: object) -> Iterator[Secret]:
    """Every Secret in the settings, whatever section it lives in (sections added later included)."""
    if isinstance(value, Secret):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from walk_secrets(getattr(value, item.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from walk_secrets(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from walk_secrets(item)


def test_a_backup_holds_no_key_and_no_secret_from_the_configuration(
    team_database: Team, run, fresh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = team_database
    key = generate_key()
    (tmp_path / "encryption.key").write_text(key + "\n", encoding="utf-8")
    (tmp_path / "smtp.password").write_text("smtp-password-4f1c9e\n", encoding="utf-8")
    (tmp_path / "metrics.token").write_text("metrics-token-0b7d2a6c55e84f7e93\n", encoding="utf-8")
    monkeypatch.setenv("PANEL_KEY", "panel-session-key-91a6f0c2d8e4b7a3c5f1e9d2")
    config = team.write_config(
        tmp_path / "secrets.toml",
        extra=(
            '\n[smtp]\nhost = "127.0.0.1"\nsecurity = "none"\nusername = "crm"\n'
            'password_file = "smtp.password"\n'
            '\n[admin]\nsecret_key_env = "PANEL_KEY"\n\n[metrics]\ntoken_file = "metrics.token"\n'
            '\n[secrets]\nkey_file = "encryption.key"\n'
        ),
    )
    settings: Settings = load_settings(config)
    secrets = [s.reveal() for s in walk_secrets(settings)]
    # two mailbox passwords, SMTP, the panel's key, the metrics token, the encryption key
    assert len(secrets) >= 6 and key in secrets
    # a mailbox added in the panel: its password is stored, encrypted with that key
    stored_password = "panel-typed-imap-password-7d41"
    box = secret_box(settings.secrets)
    with transaction(team.db.sessions) as session:
        fields = MailboxFields(name="stored", host="imap.example.com", username="stored@team.example")
        create_mailbox(session, fields, password=stored_password, box=box, providers={}, now=NOW)

    backup_file = tmp_path / "no-secrets.backup"
    assert run(config, "backup", str(backup_file)).code == 0
    contents = backup_file.read_bytes()
    if team.db.kind == "postgresql":
        # a custom-format archive compresses table data: read it back as plain SQL too
        with team.db.engine.connect() as conn:
            server_major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
        contents += subprocess.run(
            [str(pg_tool("pg_restore", server_major)), "--file=-", str(backup_file)],
            capture_output=True,
            check=True,
        ).stdout
        assert b"COPY public.activities" in contents
    else:
        assert b"SQLite format 3" in contents[:16]
    assert team.good.password.reveal() in secrets  # the sync really ran with this password
    assert b"stored@team.example" in contents  # the stored mailbox is in the backup...
    for secret in [*secrets, stored_password]:  # ...but neither its password in clear nor any key
        assert secret.encode() not in contents, f"a secret from {config} is inside the backup"

    # restored without the key, the stored secrets cannot be read; with it they can
    restored = team.write_config(tmp_path / "restored.toml", fresh_url)
    assert run(restored, "restore", str(backup_file)).code == 0
    without_key = run(restored, "status")
    assert without_key.code == 2 and "encryption key" in without_key.err.lower()
    key_config = '\n[secrets]\nkey_file = "encryption.key"\n'
    with_key = run(team.write_config(tmp_path / "with-key.toml", fresh_url, extra=key_config), "status")
    assert with_key.err == "" and "stored" in with_key.out and "never synced" in with_key.out


def test_restoring_an_older_backup_says_to_upgrade_and_a_newer_one_is_refused(
    team_database: Team, run, fresh_url: str, tmp_path: Path
) -> None:
    team = team_database
    current = migrate.head_revision(team.db.engine)
    older_file, newer_file = tmp_path / "older.backup", tmp_path / "newer.backup"
    migrate.downgrade(team.db.engine, "0002")  # a database genuinely made by an older Threadline
    assert run(team.config, "backup", str(older_file)).code == 0
    migrate.upgrade(team.db.engine)
    with team.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    assert run(team.config, "backup", str(newer_file)).code == 0
    with team.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": current})

    target = team.write_config(tmp_path / "target.toml", fresh_url)
    refused = run(target, "restore", str(newer_file))
    assert refused.code == 1
    assert "made by a newer Threadline (schema revision 9999_from_the_future)" in refused.err
    restored = run(target, "restore", str(older_file))
    assert restored.code == 0
    assert f"this version needs {current}: run `threadline db upgrade`" in restored.err
    assert run(target, "db", "upgrade").code == 0 and run(target, "db", "status").code == 0


def test_clear_errors_and_nothing_half_written(db: TestDatabase, run, tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text(f'[database]\nurl = "{db.url}"\n', encoding="utf-8")
    (tmp_path / "a-file").write_text("x", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("hello, not a backup\n", encoding="utf-8")
    cases = [
        (("backup", str(tmp_path / "missing-dir" / "x.backup")), "the directory"),
        (("backup", str(tmp_path / "a-file" / "x.backup")), "does not exist"),
        (("backup", str(tmp_path)), "is a directory"),
        (("restore", str(tmp_path / "nope.backup")), "no such file"),
        (("restore", str(tmp_path / "notes.txt")), "is not a Threadline backup"),
    ]
    for args, message in cases:
        result = run(config, *args)
        assert result.code == 1 and message in result.err, (args, result.err)
        assert result.err.count("\n") == 1 and "Traceback" not in result.err

    other_kind = tmp_path / "other-kind.backup"
    if db.kind == "sqlite":
        other_kind.write_bytes(b"PGDMP\x01\x0f\x00" + b"\x00" * 64)
        expected = "is a postgresql backup and the configured database is sqlite"
    else:
        with sqlite3.connect(other_kind) as conn:
            conn.execute("CREATE TABLE t (x)")
        expected = "is a sqlite backup and the configured database is postgresql"
    result = run(config, "restore", str(other_kind))
    assert result.code == 1 and expected in result.err

    empty = tmp_path / "empty.toml"
    empty.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "empty.db"}"\n', encoding="utf-8")
    sqlite3.connect(tmp_path / "empty.db").close()
    before = sorted(os.listdir(tmp_path))
    result = run(empty, "backup", str(tmp_path / "empty.backup"))
    assert result.code == 1 and "is empty (never migrated): nothing to back up" in result.err
    assert sorted(os.listdir(tmp_path)) == before  # no partial file, no empty backup


def test_the_pg_client_tools_must_match_the_server(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-versions"
    with pytest.raises(BackupError) as missing:
        pg_tool("pg_dump", 15, search_path=str(tmp_path), versions_dir=nowhere)
    assert str(missing.value) == (
        "pg_dump is not installed: install the PostgreSQL 15 client tools "
        "(Debian: apt install postgresql-client-15)"
    )
    # an old client left on the PATH (this machine has only one version, so a script stands in for it)
    old = tmp_path / "pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.4'\n", encoding="utf-8")
    old.chmod(0o755)
    with pytest.raises(BackupError) as too_old:
        pg_tool("pg_dump", 15, search_path=str(tmp_path), versions_dir=nowhere)
    assert (
        f"pg_dump must be version 15 or newer for this PostgreSQL 15 server, but {old} is version 13"
        in str(too_old.value)
    )
    assert "apt install postgresql-client-15" in str(too_old.value)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_the_installed_pg_dump_serves_the_test_server(db: TestDatabase) -> None:
    with db.engine.connect() as conn:
        major = int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000
    tool = pg_tool("pg_dump", major)
    version = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.split("(PostgreSQL)")[1].split(".")[0]) >= major


def test_the_client_tools_get_the_connection_without_its_password() -> None:
    from sqlalchemy.engine import make_url

    from threadline.backup import _conninfo

    local = make_url("postgresql+psycopg://threadline@/threadline?host=/var/run/postgresql")
    assert _conninfo(local) == "user='threadline' dbname='threadline' host='/var/run/postgresql'"
    remote = make_url("postgresql+psycopg://crm:s3cr%27et@db.internal:5433/crm?sslmode=verify-full")
    assert _conninfo(remote) == "host='db.internal' port='5433' user='crm' dbname='crm' sslmode='verify-full'"
    assert "s3cr" not in _conninfo(remote)
