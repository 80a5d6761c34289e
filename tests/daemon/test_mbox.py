"""Backfilling an mbox export: the sync's pipeline on a file, idempotent with what the sync already logged."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.matching import Team
from daemon.mbox import MboxError, import_mbox, mbox_folder
from daemon.sync import sync_mailbox
from models.schema import Activity, Contact, SeenMessage
from settings import MailboxSettings, MatchingSettings, Secret
from tests.daemon.conftest import MakeMailbox, build_message, make_settings, team_of
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW
from threadline.cli import main


@pytest.fixture
def session(sqlite_db: TestDatabase) -> Iterator[Session]:
    with sqlite_db.sessions() as s:
        yield s


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(str(path))
    try:
        for raw in messages:
            box.add(raw)
        box.flush()
    finally:
        box.close()
    return path


def offline_mailbox() -> MailboxSettings:
    return MailboxSettings(
        name="jane", host="127.0.0.1", username="jane", password=Secret("x", "test"), port=1
    )


def count(session: Session, model: object) -> int:
    session.rollback()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def test_mbox_import_files_messages_and_resumes_without_duplicates(
    tmp_path: Path, sqlite_db: TestDatabase, session: Session
) -> None:
    messages = [
        build_message(from_="jane@team.example", to=f"C {i} <c{i}@acme.example>", subject=f"Offer {i}")
        for i in range(7)
    ]
    messages.append(build_message(from_="jane@team.example", to="bob@team.example", subject="internal"))
    path = write_mbox(tmp_path / "takeout.mbox", messages)
    box = offline_mailbox()
    settings = make_settings(box, batch_size=3)
    seen_progress: list[tuple[int, int]] = []

    result = import_mbox(
        box, sqlite_db.sessions, path, matching=settings.matching, team=team_of(settings), now_fn=lambda: NOW,
        progress=lambda done, total: seen_progress.append((done, total)),
    )  # fmt: skip
    assert (result.new, result.logged, result.contacts_created, result.skipped) == (8, 7, 7, 1)
    assert seen_progress == [(0, 8), (3, 8), (6, 8), (8, 8)]
    assert count(session, Activity) == 7
    subjects = sorted(session.scalars(select(Activity.subject)))
    assert subjects == [f"Offer {i}" for i in range(7)]
    folder, _ = mbox_folder(path)
    activity = session.scalar(select(Activity).where(Activity.subject == "Offer 0"))
    assert activity is not None and [(s.mailbox, s.folder) for s in activity.sightings] == [("jane", folder)]

    again = import_mbox(box, sqlite_db.sessions, path, matching=settings.matching, team=team_of(settings),
                        now_fn=lambda: NOW)  # fmt: skip
    assert (again.new, again.logged) == (0, 0)
    assert count(session, Activity) == 7 and count(session, SeenMessage) == 8


def test_mbox_import_after_the_sync_only_adds_sightings(
    dovecot: DovecotServer,
    make_mailbox: MakeMailbox,
    tmp_path: Path,
    sqlite_db: TestDatabase,
    session: Session,
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    raw = build_message(from_="jane@team.example", to="Pat <pat@acme.example>", subject="Proposal")
    dovecot.append(box.username, "INBOX", [raw])
    synced = sync_mailbox(box, sqlite_db.sessions, matching=settings.matching, team=team_of(settings),
                          now_fn=lambda: NOW, folders=["INBOX"])  # fmt: skip
    assert synced.logged == 1
    older = build_message(from_="jane@team.example", to="pat@acme.example", subject="Older mail")
    path = write_mbox(tmp_path / "export.mbox", [raw, older])
    result = import_mbox(box, sqlite_db.sessions, path, matching=settings.matching, team=team_of(settings),
                         now_fn=lambda: NOW)  # fmt: skip
    assert (result.new, result.logged, result.duplicates, result.contacts_created) == (2, 2, 1, 0)
    assert count(session, Activity) == 2 and count(session, Contact) == 1
    activity = session.scalar(select(Activity).where(Activity.subject == "Proposal"))
    assert activity is not None and {s.folder for s in activity.sightings} == {"INBOX", "mbox:export.mbox"}


def test_a_file_that_is_not_an_mbox_is_refused(tmp_path: Path, sqlite_db: TestDatabase) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\nnothing to see\n")
    box = offline_mailbox()
    with pytest.raises(MboxError, match="no messages found"):
        import_mbox(box, sqlite_db.sessions, path, matching=MatchingSettings(), team=Team())


# ---- the command ----------------------------------------------------------------------------------------


def write_config(tmp_path: Path, db: TestDatabase) -> Path:
    config = tmp_path / "threadline.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n\n[team]\ndomains = ["team.example"]\n\n'
        '[[mailboxes]]\nname = "jane"\nhost = "127.0.0.1"\nusername = "jane"\npassword_env = "TEST_MBOX_PW"\n'
        'security = "none"\n'
    )
    return config


def test_import_mbox_command(
    tmp_path: Path,
    sqlite_db: TestDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEST_MBOX_PW", "secret")
    config = write_config(tmp_path, sqlite_db)
    path = write_mbox(tmp_path / "takeout.mbox", [
        build_message(from_="jane@team.example", to="pat@acme.example", subject="One"),
        build_message(from_="jane@team.example", to="kim@acme.example", subject="Two"),
    ])  # fmt: skip
    assert main(["--config", str(config), "import", "mbox", str(path), "--mailbox", "jane"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "takeout.mbox into jane: 2 messages, 2 logged (0 already logged), 2 contacts created"
    )

    assert (
        main(["--config", str(config), "import", "mbox", str(tmp_path / "missing.mbox"), "--mailbox", "jane"])
        == 1
    )
    assert capsys.readouterr().err.strip() == f"threadline: {tmp_path / 'missing.mbox'}: no such file"

    assert main(["--config", str(config), "import", "mbox", str(path), "--mailbox", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "no mailbox named 'nobody'" in err and len(err.strip().splitlines()) == 1


def test_a_message_the_database_refuses_is_quarantined_and_the_rest_of_its_batch_commits(
    tmp_path: Path, sqlite_db: TestDatabase, session: Session
) -> None:
    from sqlalchemy import text

    from models.schema import QuarantinedMessage

    # a stand-in for any row the database refuses (a constraint, a value it cannot store)
    with sqlite_db.engine.begin() as conn:
        conn.execute(text(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON activities WHEN NEW.subject = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned row refused'); END"
        ))  # fmt: skip
    subjects = ["one", "two", "poison", "four", "five"]
    messages = [
        build_message(from_="jane@team.example", to=f"p{i}@acme.example", subject=subject)
        for i, subject in enumerate(subjects)
    ]
    path = write_mbox(tmp_path / "batch.mbox", messages)
    box = offline_mailbox()
    settings = make_settings(box, batch_size=10)
    result = import_mbox(box, sqlite_db.sessions, path, matching=settings.matching, team=team_of(settings),
                         now_fn=lambda: NOW)  # fmt: skip
    assert (result.new, result.logged, result.quarantined, result.contacts_created) == (5, 4, 1, 4)
    assert sorted(session.scalars(select(Activity.subject))) == ["five", "four", "one", "two"]
    row = session.scalar(select(QuarantinedMessage))
    assert row is not None and row.uid == 3 and "poisoned row refused" in row.reason
    assert count(session, SeenMessage) == 5
    # the contact made for the refused message was rolled back with it
    assert count(session, Contact) == 4
