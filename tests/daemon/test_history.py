"""Earlier mail against a real Dovecot, on SQLite and PostgreSQL: the index of skipped mail, and linking it
when a contact appears from each trigger (the panel's models operations, the CSV import, a contact the sync
creates, the daemon's job), exactly once under kill -9 and two runs at once, across a UIDVALIDITY change,
and with messages the server no longer has."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from daemon.relink import RelinkResult, relink_history
from daemon.sync import SyncResult, sync_mailbox
from models.contacts import request_relink, set_company_domains, set_contact_emails
from models.db import transaction
from models.history import HistorySelection
from models.schema import (
    Activity,
    Company,
    Contact,
    ContactEmail,
    EmailSighting,
    HistoryAddress,
    HistoryMessage,
    RelinkRequest,
    SeenMessage,
    activity_contacts,
)
from settings import MailboxSettings, Settings
from tests.daemon.conftest import MakeMailbox, ParserFor, build_message, make_settings, team_of
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.factories import NOW
from threadline.importer import import_contacts

PAT = "pat@acme.example"
Sync = Callable[..., SyncResult]
Relink = Callable[..., RelinkResult]


@pytest.fixture
def sync(db: TestDatabase, parser_for: ParserFor) -> Sync:
    def run(settings: Settings, mailbox: MailboxSettings | None = None, **kwargs: Any) -> SyncResult:
        return sync_mailbox(
            mailbox or settings.mailboxes[0], db.sessions, matching=settings.matching, team=team_of(settings),
            now_fn=lambda: NOW, parser=parser_for(settings.matching), **kwargs,
        )  # fmt: skip

    return run


@pytest.fixture
def relink(db: TestDatabase, parser_for: ParserFor) -> Relink:
    def run(settings: Settings, selection: HistorySelection | None = None, **kwargs: Any) -> RelinkResult:
        return relink_history(
            settings.mailboxes, db.sessions, matching=settings.matching, team=team_of(settings),
            parser=parser_for(settings.matching), selection=selection, now_fn=lambda: NOW, **kwargs,
        )  # fmt: skip

    return run


def inbound(sender: str, subject: str, **kwargs: Any) -> bytes:
    return build_message(from_=sender, to="jane@team.example", subject=subject, **kwargs)


def timeline(db: TestDatabase, address: str) -> list[str]:
    """The subjects on the timeline of the contact with this address, oldest first."""
    with db.sessions() as session:
        return list(
            session.scalars(
                select(Activity.subject)
                .join(activity_contacts, activity_contacts.c.activity_id == Activity.id)
                .join(ContactEmail, ContactEmail.contact_id == activity_contacts.c.contact_id)
                .where(ContactEmail.email == address)
                .order_by(Activity.occurred_at, Activity.subject)
            )
        )


def count(db: TestDatabase, model: Any, *where: Any) -> int:
    with db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def add_contact(db: TestDatabase, name: str, *addresses: str) -> int:
    """A contact as the panel makes it (models.contacts.set_contact_emails)."""
    with transaction(db.sessions) as session:
        contact = Contact(name=name, created_at=NOW)
        session.add(contact)
        session.flush()
        set_contact_emails(session, contact, addresses)
        return contact.id


def history_of(dovecot: DovecotServer, box: MailboxSettings, sync: Sync, settings: Settings) -> None:
    """Pat wrote three times and Sam once before either was a contact; none of it is logged."""
    dovecot.append(box.username, "INBOX", [
        inbound("Pat Prospect <pat@acme.example>", "Pricing question", date=NOW - timedelta(days=30)),
        inbound("Pat Prospect <pat+news@acme.example>", "Pricing follow-up", date=NOW - timedelta(days=20)),
        inbound("Pat <pat@acme.example>", "Demo next week?", date=NOW - timedelta(days=10)),
        inbound("sam@other.example", "Hello from Sam", date=NOW - timedelta(days=5)),
        build_message(from_="jane@team.example", to="bob@team.example", subject="internal"),
    ])  # fmt: skip
    result = sync(settings)
    assert (result.error, result.logged, result.skipped) == (None, 0, 5)


# ---- the index ------------------------------------------------------------------------------------------


def test_skipped_mail_is_indexed_without_bodies_or_subjects(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    with db.sessions() as session:
        rows = session.execute(select(HistoryMessage.uid, HistoryMessage.content_key, HistoryMessage.sent_at))
        assert [(uid, key.startswith("mid:<"), sent) for uid, key, sent in rows.all()] == [
            (1, True, NOW - timedelta(days=30)),
            (2, True, NOW - timedelta(days=20)),
            (3, True, NOW - timedelta(days=10)),
            (4, True, NOW - timedelta(days=5)),
        ]  # the internal message has nobody to wait for: not indexed
        # addresses stored once each, sub-addresses in their base form; no names, subjects or bodies anywhere
        assert sorted(session.scalars(select(HistoryAddress.address))) == [
            "pat@acme.example",
            "sam@other.example",
        ]
    assert {c.name for c in HistoryMessage.__table__.columns} == {
        "id", "folder_id", "uidvalidity", "uid", "content_key", "sent_at", "gone"
    }  # fmt: skip


def test_history_older_than_history_days_is_pruned(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync
) -> None:
    from daemon.relink import prune

    box = make_mailbox("jane")
    settings = make_settings(box, history_days=15)
    history_of(dovecot, box, sync, settings)
    assert prune(db.sessions, matching=settings.matching, now=NOW) == 2
    assert count(db, HistoryMessage) == 2
    # pat's address is still used by the message of ten days ago; none is left unused
    with db.sessions() as session:
        assert sorted(session.scalars(select(HistoryAddress.address))) == [
            "pat@acme.example",
            "sam@other.example",
        ]


# ---- linking, from each trigger -------------------------------------------------------------------------


def test_a_contact_added_in_the_panel_gets_its_earlier_mail_once(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)

    add_contact(db, "Pat Prospect", "pat@acme.example")
    assert count(db, RelinkRequest) == 1
    result = relink(settings)
    assert (result.errors, result.found, result.logged, result.gone) == ([], 3, 3, 0)
    assert timeline(db, "pat@acme.example") == ["Pricing question", "Pricing follow-up", "Demo next week?"]
    assert count(db, RelinkRequest) == 0
    # logged mail leaves the index; its SeenMessage rows say it is logged now
    assert count(db, HistoryMessage) == 1
    assert count(db, SeenMessage, SeenMessage.outcome == "logged") == 3

    # again: nothing to do, nothing doubled; and the next sync does not log them again either
    assert relink(settings, HistorySelection(("pat@acme.example",))).found == 0
    assert sync(settings).logged == 0
    assert count(db, Activity) == 3 and count(db, EmailSighting) == 3


def test_a_contact_gaining_a_second_address_gets_that_mail(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    contact_id = add_contact(db, "Pat Prospect", "pat@acme.example")
    relink(settings)
    with transaction(db.sessions) as session:
        contact = session.get(Contact, contact_id)
        assert contact is not None
        set_contact_emails(session, contact, ["pat@acme.example", "sam@other.example"])
    result = relink(settings)
    assert (result.found, result.logged) == (1, 1)
    assert timeline(db, "pat@acme.example")[-1] == "Hello from Sam"
    assert count(db, Activity) == 4


def test_the_csv_import_links_each_prospects_earlier_conversation(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink,
    tmp_path: Path,
) -> None:  # fmt: skip
    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    csv = tmp_path / "prospects.csv"
    csv.write_text("name,email,company\nPat Prospect,pat@acme.example,Acme\nSam,sam@other.example,\n")
    out, err = io.StringIO(), io.StringIO()
    assert import_contacts(db.sessions, csv, now=NOW, out=out, err=err) == 0, err.getvalue()

    result = relink(settings)
    assert (result.errors, result.found, result.logged) == ([], 4, 4)
    assert len(timeline(db, "pat@acme.example")) == 3
    assert timeline(db, "sam@other.example") == ["Hello from Sam"]


def test_a_contact_the_sync_creates_gets_its_earlier_mail_on_the_next_sync_once(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sync: Sync,
) -> None:  # fmt: skip
    from threadline.cli import main

    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    # Jane answers Pat: with create_contacts = "sent" the sync makes Pat a contact
    dovecot.append(box.username, "INBOX", [
        build_message(from_="jane@team.example", to="Pat Prospect <pat@acme.example>", subject="Re: Demo")
    ])  # fmt: skip
    config = write_config(tmp_path, db, box)
    monkeypatch.setenv("TEST_IMAP_PASSWORD", box.password.reveal())
    assert main(["--config", str(config), "sync", "--once"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("jane: 1 new, 1 logged, 1 contacts created")
    assert (
        lines[1]
        == "earlier mail: 3 earlier emails found: 3 logged, 0 still not logged, 0 no longer on the server"
    )
    assert len(timeline(db, "pat@acme.example")) == 4
    assert main(["--config", str(config), "sync", "--once"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []
    assert count(db, Activity) == 4


def test_the_running_daemon_links_earlier_mail_within_one_poll_interval(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync
) -> None:
    from dataclasses import replace

    from daemon.service import Daemon

    box = replace(make_mailbox("jane"), poll_seconds=1, idle=False)
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    stop = threading.Event()
    daemon = Daemon(settings, db.sessions, stop=stop, with_alerts=False)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while daemon.scheduler.get_job("relink") is None:
            assert time.monotonic() < deadline, "the relink job was never scheduled"
            time.sleep(0.05)
        job = daemon.scheduler.get_job("relink")
        # the job runs every poll interval (or more often); the fetching itself takes what it takes
        assert job.trigger.interval.total_seconds() <= box.poll_seconds
        add_contact(db, "Pat Prospect", "pat@acme.example")
        while len(timeline(db, "pat@acme.example")) < 3:
            assert time.monotonic() < deadline + 60, "the daemon did not link the earlier mail"
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert count(db, Activity) == 3


# ---- exactly once ---------------------------------------------------------------------------------------


def write_config(tmp_path: Path, db: TestDatabase, mailbox: MailboxSettings, batch_size: int = 200) -> Path:
    config = tmp_path / "threadline.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n\n[team]\ndomains = ["team.example"]\n\n'
        f"[matching]\nbatch_size = {batch_size}\n\n"
        f'[[mailboxes]]\nname = "{mailbox.name}"\nhost = "{mailbox.host}"\nport = {mailbox.port}\n'
        f'security = "none"\nusername = "{mailbox.username}"\npassword_env = "TEST_IMAP_PASSWORD"\n'
        'folders = ["INBOX"]\n'
    )
    return config


def test_kill_9_mid_relink_then_rerun_logs_each_earlier_email_once(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, tmp_path: Path
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box, batch_size=10)
    n = 300
    dovecot.append(box.username, "INBOX", [
        inbound(f"Prospect {i} <p{i}@corp{i % 20}.example>", f"Question {i}.{k}", date=NOW - timedelta(i))
        for i in range(n)
        for k in range(2)
    ])  # fmt: skip
    assert sync(settings).skipped == 2 * n
    with transaction(db.sessions) as session:
        for i in range(n):
            contact = Contact(name=f"Prospect {i}", created_at=NOW)
            session.add(contact)
            session.flush()
            set_contact_emails(session, contact, [f"p{i}@corp{i % 20}.example"])

    config = write_config(tmp_path, db, box, batch_size=10)
    env = {**os.environ, "TEST_IMAP_PASSWORD": box.password.reveal(), "THREADLINE_CONFIG": str(config)}
    command = [sys.executable, "-m", "threadline", "relink"]
    # the queued requests are what `sync --once` does; `relink` looks at every contact: both paths covered
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while count(db, Activity) < 30:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the relink committed nothing"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert 30 <= count(db, Activity) < 2 * n

    rerun = subprocess.run(
        [sys.executable, "-m", "threadline", "sync", "--once"], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert count(db, Activity) == 2 * n
    assert count(db, HistoryMessage) == 0
    with db.sessions() as session:
        assert session.scalar(select(func.count(func.distinct(Activity.subject)))) == 2 * n
        per_contact = session.execute(
            select(activity_contacts.c.contact_id, func.count()).group_by(activity_contacts.c.contact_id)
        ).all()
    assert len(per_contact) == n and {c for _, c in per_contact} == {2}


def test_two_relinks_at_once_log_each_earlier_email_once(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box, batch_size=7)
    n = 60
    dovecot.append(box.username, "INBOX", [
        inbound(f"p{i}@corp{i % 5}.example", f"Question {i}.{k}") for i in range(n) for k in range(2)
    ])  # fmt: skip
    assert sync(settings).skipped == 2 * n
    with transaction(db.sessions) as session:
        for i in range(n):
            contact = Contact(name=f"Prospect {i}", created_at=NOW)
            session.add(contact)
            session.flush()
            set_contact_emails(session, contact, [f"p{i}@corp{i % 5}.example"])

    results: list[RelinkResult] = []
    start = threading.Barrier(2)

    def one() -> None:
        start.wait()
        results.append(relink(settings))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [r.errors for r in results] == [[], []]
    assert count(db, Activity) == 2 * n
    assert count(db, activity_contacts) == 2 * n
    assert count(db, EmailSighting) == 2 * n
    assert count(db, HistoryMessage) == 0 and count(db, RelinkRequest) == 0


# ---- the server changed ---------------------------------------------------------------------------------


def test_after_a_uidvalidity_change_earlier_mail_is_found_again_by_content_key(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    messages = [
        inbound("Pat Prospect <pat@acme.example>", f"Question {i}", date=NOW - timedelta(days=i))
        for i in range(3)
    ]
    dovecot.append(box.username, "INBOX", messages)
    assert sync(settings).skipped == 3
    # the folder is rebuilt (new UIDVALIDITY, UIDs in another order) and the sync has not seen it yet
    dovecot.reset_mailbox(box.username, "INBOX")
    dovecot.append(box.username, "INBOX", [inbound("x@else.example", "other"), *reversed(messages)])
    add_contact(db, "Pat Prospect", "pat@acme.example")
    result = relink(settings)
    assert (result.errors, result.found, result.logged, result.gone) == ([], 3, 3, 0)
    assert timeline(db, "pat@acme.example") == ["Question 2", "Question 1", "Question 0"]

    # the sync now rescans the new generation: already logged, nothing doubles
    assert sync(settings).logged == 3
    assert count(db, Activity) == 3


def test_after_a_rescan_the_new_generation_is_linked_once(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    messages = [inbound("pat@acme.example", f"Question {i}") for i in range(3)]
    dovecot.append(box.username, "INBOX", messages)
    sync(settings)
    dovecot.reset_mailbox(box.username, "INBOX")
    dovecot.append(box.username, "INBOX", messages)
    sync(settings)
    assert count(db, HistoryMessage) == 6  # both generations indexed
    add_contact(db, "Pat", "pat@acme.example")
    result = relink(settings)
    assert (result.errors, result.logged) == ([], 3)
    assert count(db, Activity) == 3 and count(db, HistoryMessage) == 0


def test_a_message_the_server_no_longer_has_is_marked_gone(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    dovecot.expunge_all(box.username, "INBOX")
    dovecot.append(box.username, "INBOX", [inbound("pat@acme.example", "Still here")])
    assert sync(settings).skipped == 1
    add_contact(db, "Pat Prospect", "pat@acme.example")
    result = relink(settings)
    assert (result.errors, result.found, result.logged, result.gone) == ([], 4, 1, 3)
    assert timeline(db, "pat@acme.example") == ["Still here"]
    assert count(db, HistoryMessage, HistoryMessage.gone.is_(True)) == 3
    # gone messages are not looked for again
    assert relink(settings, HistorySelection(("pat@acme.example",))).found == 0


def test_on_demand_selection_by_date_and_a_mailbox_down_keeps_the_queue(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink
) -> None:
    from dataclasses import replace

    from settings import Secret

    box = make_mailbox("jane")
    settings = make_settings(box)
    history_of(dovecot, box, sync, settings)
    add_contact(db, "Pat Prospect", "pat@acme.example")
    broken = make_settings(replace(box, password=Secret("wrong", "test")))
    failed = relink(broken)
    assert failed.errors and count(db, RelinkRequest) == 1 and count(db, Activity) == 0

    since = HistorySelection(("pat@acme.example",), (), NOW - timedelta(days=25))
    assert (relink(settings, since).logged, len(timeline(db, "pat@acme.example"))) == (2, 2)
    assert relink(settings).logged == 1
    assert count(db, RelinkRequest) == 0


def test_models_operations_queue_requests_for_new_addresses_and_domains(db: TestDatabase) -> None:
    with transaction(db.sessions) as session:
        company = Company(name="Acme", created_at=NOW)
        session.add(company)
        session.flush()
        set_company_domains(session, company, ["acme.example"])
        set_company_domains(session, company, ["acme.example", "acme-corp.example"])
        request_relink(session, addresses=["x@y.example"], now=NOW)
    with db.sessions() as session:
        rows = session.execute(select(RelinkRequest.address, RelinkRequest.domain).order_by(RelinkRequest.id))
        assert rows.all() == [(None, "acme.example"), (None, "acme-corp.example"), ("x@y.example", None)]


def test_earlier_mail_follows_the_deal_rules_as_of_its_date(
    db: TestDatabase, dovecot: DovecotServer, make_mailbox: MakeMailbox, sync: Sync, relink: Relink,
    make_contact: Callable[..., Any], make_deal: Callable[..., Any],
) -> None:  # fmt: skip
    from models.schema import Deal, DealStatus

    box = make_mailbox("jane")
    settings = make_settings(box)
    pat = make_contact("Pat Prospect", email="pat@acme.example")
    old = make_deal("Pilot", contacts=[pat], created_at=NOW - timedelta(days=60))
    new = make_deal("Expansion", contacts=[pat], created_at=NOW - timedelta(days=1))
    with transaction(db.sessions) as session:
        won = session.get(Deal, old.id)
        assert won is not None
        won.status, won.closed_at = DealStatus.WON, NOW - timedelta(days=20)
    dovecot.append(box.username, "INBOX", [
        inbound("Pat <pat@home.example>", "Pilot feedback", date=NOW - timedelta(days=40)),
        inbound("Pat <pat@home.example>", "Between deals", date=NOW - timedelta(days=10)),
    ])  # fmt: skip
    assert sync(settings).skipped == 2
    with transaction(db.sessions) as session:
        contact = session.get(Contact, pat.id)
        assert contact is not None
        set_contact_emails(session, contact, ["pat@acme.example", "pat@home.example"])
    assert relink(settings).logged == 2
    with db.sessions() as session:
        filed = dict(session.execute(select(Activity.subject, Activity.deal_id)).all())
    # forty days ago the pilot was Pat's one open deal; ten days ago Pat had none (the expansion came later)
    assert filed == {"Pilot feedback": old.id, "Between deals": None}
    assert new.id != old.id
