"""`threadline demo`: a realistic dataset with logins, and `--if-empty` that never seeds twice."""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from models.schema import (
    Activity,
    ActivityKind,
    Company,
    Contact,
    Deal,
    DealStageChange,
    DealStatus,
    EmailSighting,
    FolderSyncState,
    MailboxStatus,
    Notification,
    Role,
    Task,
    User,
)
from models.users import verify_password
from tests.cli.conftest import write_config

LOGINS = [
    "  admin    alex@threadline.demo             password: threadline-admin",
    "  manager  maya@threadline.demo             password: threadline-manager",
    "  rep      sam@threadline.demo              password: threadline-rep",
]


def test_demo_seeds_a_realistic_dataset_and_prints_the_logins(cli, db):
    started = datetime.now(UTC)
    result = cli("demo")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0].startswith("Demo data added: 3 users, 50 companies, 206 contacts, 60 deals, ")
    assert (
        lines[1]
        == "Open http://127.0.0.1:8000 and sign in with a demo login (unless its password was changed since):"
    )
    assert lines[2:] == LOGINS
    with db.sessions() as session:

        def count(model, *where):
            return session.scalar(select(func.count()).select_from(model).where(*where))

        users = {u.email: u for u in session.scalars(select(User))}
        assert {e: u.role for e, u in users.items()} == {
            "alex@threadline.demo": Role.ADMIN,
            "maya@threadline.demo": Role.MANAGER,
            "sam@threadline.demo": Role.REP,
        }
        assert verify_password(users["sam@threadline.demo"], "threadline-rep")
        assert (count(Company), count(Contact), count(Deal)) == (50, 206, 60)
        assert count(Deal, Deal.status == DealStatus.WON) >= 5
        lost = session.scalars(select(Deal).where(Deal.status == DealStatus.LOST)).all()
        assert len(lost) >= 5 and all(d.lost_reason and d.closed_at for d in lost)
        # stalled: open, in its stage and silent for longer than the stall days (14 by default)
        stale = started - timedelta(days=14)
        stalled = count(
            Deal, Deal.status == DealStatus.OPEN, Deal.stage_entered_at < stale, Deal.last_activity_at < stale
        )
        assert 3 <= stalled <= 15
        # history: deals went stage by stage
        assert count(DealStageChange) > 60 * 2
        activities = count(Activity)
        assert 200 <= activities <= 600
        assert count(Activity, Activity.occurred_at < started - timedelta(days=91)) == 0
        for kind in (ActivityKind.EMAIL, ActivityKind.CALL, ActivityKind.MEETING, ActivityKind.NOTE):
            assert count(Activity, Activity.kind == kind) > 10, kind
        emails = session.scalars(select(Activity).where(Activity.kind == ActivityKind.EMAIL)).all()
        assert all(
            e.message_id and e.message_id.startswith("<") and e.snippet and e.direction for e in emails
        )
        assert {s.mailbox for s in session.scalars(select(EmailSighting))} == {"demo"}
        assert count(Task, Task.done_at.is_(None), Task.due_at < started) >= 3


def test_demo_shows_alerts_and_a_sync_status_from_the_first_login(cli, db):
    """No waiting for the 08:00 weekday scan: the panel shows the alerting and the mailbox right away."""
    from admin.app import create_app
    from tests.admin.conftest import log_in, settings_for

    started = datetime.now(UTC)
    result = cli("demo")
    assert result.code == 0
    with db.sessions() as session:
        rows = session.execute(select(Notification.kind, func.count()).group_by(Notification.kind)).all()
        kinds = {kind: n for kind, n in rows}
        assert set(kinds) == {"stalled_deal", "overdue_task", "waiting_lead"}
        assert f"{sum(kinds.values())} alerts." in result.out.splitlines()[0]
        notes = session.scalars(select(Notification)).all()
        assert all(started <= n.created_at <= datetime.now(UTC) for n in notes)  # decided now, not faked
        assert all(n.sent_at is None and n.last_error is None for n in notes)  # and not emailed
        [mailbox] = session.scalars(select(MailboxStatus)).all()
        assert (mailbox.mailbox, mailbox.consecutive_failures, mailbox.last_error) == ("demo", 0, None)
        assert mailbox.last_success_at is not None and mailbox.last_success_at >= started
        folders = {f.folder: f for f in session.scalars(select(FolderSyncState))}
        assert sorted(folders) == ["INBOX", "Sent"]
        for folder, state in folders.items():
            sightings = count_of(session, EmailSighting, EmailSighting.folder == folder)
            assert state.messages_logged == sightings > 0
            assert state.messages_seen >= state.messages_logged

    app = create_app(settings_for(db.url), db.sessions)
    app.config["TESTING"] = True
    rep = app.test_client()
    assert log_in(rep, "sam@threadline.demo", "threadline-rep").status_code == 302
    page = rep.get("/admin/notifications/").text
    assert "Stalled deal: " in page and "Task overdue: " in page and "No alerts." not in page
    admin = app.test_client()
    assert log_in(admin, "alex@threadline.demo", "threadline-admin").status_code == 302
    sync = admin.get("/admin/sync/").text
    assert "The sync has not run yet." not in sync and "No folder synced yet." not in sync
    assert "<td>demo</td>" in sync


def count_of(session, model, *where):
    return session.scalar(select(func.count()).select_from(model).where(*where))


def test_demo_if_empty_does_nothing_the_second_time(cli, db):
    assert cli("demo", "--if-empty").code == 0
    again = cli("demo", "--if-empty")
    assert again.code == 0
    assert again.out.splitlines() == [
        "Demo data not added: the database already has deals.",
        "Open http://127.0.0.1:8000 and sign in with a demo login (unless its password was changed since):",
        *LOGINS,
    ]
    refused = cli("demo")
    assert refused.code == 1
    assert (
        refused.err
        == "threadline: the database already has deals: demo data goes into an empty database only\n"
    )
    with db.sessions() as session:
        assert session.scalar(select(func.count(Deal.id))) == 60
        assert session.scalar(select(func.count(User.id))) == 3


def test_demo_uses_the_team_domain_and_admin_address(db, tmp_path, capsys):
    from threadline.cli import main

    config = tmp_path / "team.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n[team]\ndomains = ["acme-sales.com"]\n'
        '[admin]\nhost = "0.0.0.0"\nport = 8080\n[logging]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )
    if "@" in db.url.split("//")[1].split("/")[0] and ":" in db.url.split("//")[1].split("@")[0]:
        return  # a password in the test URL: covered by the other tests through url_env
    assert main(["--config", str(config), "demo"]) == 0
    out = capsys.readouterr().out
    assert "Open http://0.0.0.0:8080 and sign in" in out
    assert "  rep      sam@acme-sales.com" in out


def test_console_script_end_to_end(tmp_path, monkeypatch):
    """The installed `threadline` command: upgrade a fresh SQLite file, seed the demo, export it."""
    threadline = shutil.which("threadline", path=str(Path(sys.executable).parent))
    assert threadline, "the threadline console script is not installed in this virtualenv"
    config = write_config(
        tmp_path / "threadline.toml", f"sqlite:///{tmp_path / 'fresh' / 'crm.db'}", monkeypatch
    )
    env = {**os.environ, "THREADLINE_CONFIG": str(config)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [threadline, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )

    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded from empty to revision" in upgraded.stdout
    demo = run("demo", "--if-empty")
    assert demo.returncode == 0, demo.stderr
    assert "password: threadline-admin" in demo.stdout
    exported = run("export", "deals", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    deals = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(deals) == 60
    assert {d["status"] for d in deals} == {"open", "won", "lost"}
    assert all(d["pipeline"] == "Sales" and d["value"].count(".") == 1 for d in deals)
