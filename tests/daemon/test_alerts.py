"""The alert scan end to end: digests land in a real SMTP server (aiosmtpd on loopback), exactly once."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from daemon.alerts import (
    SKIPPED_BUSY,
    cron_trigger,
    deal_url,
    retry_unsent,
    run_scan,
    scan_lock,
    schedule_alerts,
)
from models.activities import create_task, log_activity
from models.db import make_engine, make_sessionmaker
from models.schema import Activity, ActivityKind, Direction, Notification
from settings import AlertSettings, Settings, SmtpSettings, TeamSettings
from tests.fixtures.factories import stage_named
from tests.fixtures.smtp import *  # noqa: F403
from threadline.cli import main

DAY = timedelta(days=1)
BASE_URL = "https://crm.example.com"


def settings_for(server, **alerts) -> Settings:
    return Settings(
        team=TeamSettings(timezone="UTC"),
        alerts=AlertSettings(**{"stall_days": 14, "remind_every_days": 7, **alerts}),
        smtp=SmtpSettings(
            host=server.host,
            port=server.port,
            security="none",
            from_address="alerts@team.example",
            base_url=BASE_URL,
            timeout_seconds=5,
        ),
    )


def notifications(session):
    session.rollback()  # end the test session's snapshot so it sees what the scan committed
    session.expire_all()
    return session.scalars(select(Notification).order_by(Notification.id)).all()


def test_owner_gets_one_digest_with_deals_tasks_and_leads(
    db, session, smtp_server, make_user, make_deal, make_contact, now
):
    ann = make_user("ann@team.example", name="Ann Owner")
    bob = make_user("bob@team.example", name="Bob Other")
    deal = make_deal(
        title="Acme renewal", stage="Proposal", owner=ann, value="12500.50", created_at=now - 40 * DAY
    )
    log_activity(session, kind="call", occurred_at=now - 20 * DAY, now=now, subject="Pricing call", deal=deal)
    create_task(
        session,
        title="Send contract to Globex",
        now=now - 3 * DAY,
        due_at=now - 2 * DAY,
        assignee=ann,
        deal=deal,
    )
    session.commit()
    make_contact(
        name="Lena Lead", email="lena@newco.example", owner=ann, created_at=now - 30 * timedelta(hours=1)
    )
    make_deal(title="Bob's fresh deal", owner=bob, created_at=now - DAY)

    result = run_scan(settings_for(smtp_server), db.sessions, now=now)

    assert (result.decided, result.digests_sent, result.digests_failed) == (3, 1, 0)
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("ann@team.example",)
    assert mail.message["To"] == "Ann Owner <ann@team.example>"
    assert mail.message["From"] == "alerts@team.example"
    assert mail.message["Subject"] == "Threadline: 1 stalled deal, 1 overdue task, 1 waiting lead"
    link = deal_url(BASE_URL, deal.id)
    assert link == f"{BASE_URL}/admin/records/deal/{deal.id}"
    text = mail.text
    assert (
        f"* Acme renewal: stage Proposal, stalled 20 days, last activity {(now - 20 * DAY):%Y-%m-%d}, "
        f"value USD 12,500.50\n  {link}"
    ) in text
    assert "* Send contract to Globex: due " in text and "2 days overdue, deal Acme renewal" in text
    assert "* Lena Lead <lena@newco.example>: created " in text and "30 hours without a first contact" in text
    html = mail.html
    assert f'<a href="{link}">Acme renewal</a>' in html and "USD 12,500.50" in html
    assert "Lena Lead &lt;lena@newco.example&gt;" in html
    assert all(n.sent_at == now and n.last_error is None for n in notifications(session))


def test_opted_out_owner_muted_deal_and_excluded_stage_get_nothing(
    db, session, smtp_server, make_user, make_deal, now
):
    make_deal(
        title="Opted out",
        owner=make_user("out@team.example", alerts_enabled=False),
        created_at=now - 30 * DAY,
    )
    muter = make_user("muter@team.example")
    make_deal(title="Muted", owner=muter, created_at=now - 30 * DAY, alerts_muted=True)
    stage_named(session, "Negotiation").alerts_excluded = True
    session.commit()
    make_deal(title="Excluded", stage="Negotiation", owner=muter, created_at=now - 30 * DAY)

    result = run_scan(settings_for(smtp_server), db.sessions, now=now)

    assert (result.decided, result.digests_sent) == (0, 0)
    assert smtp_server.messages == [] and notifications(session) == []


def test_one_email_per_stall_then_reminder_then_new_stall(
    db, session, smtp_server, make_user, make_deal, now
):
    owner = make_user("ann@team.example")
    deal = make_deal(title="Acme renewal", owner=owner, created_at=now - 14 * DAY)
    settings = settings_for(smtp_server)

    run_scan(settings, db.sessions, now=now)
    run_scan(settings, db.sessions, now=now + timedelta(hours=1))
    run_scan(settings, db.sessions, now=now + 6 * DAY)
    assert len(smtp_server.wait_for(1)) == 1

    run_scan(settings, db.sessions, now=now + 7 * DAY)  # remind_every_days later
    assert "stalled 21 days" in smtp_server.wait_for(2)[1].text

    log_activity(
        session, kind="meeting", occurred_at=now + 8 * DAY, now=now + 8 * DAY, subject="Demo", deal=deal
    )
    session.commit()
    run_scan(settings, db.sessions, now=now + 10 * DAY)
    assert len(smtp_server.messages) == 2  # had activity: not stalled
    run_scan(settings, db.sessions, now=now + 22 * DAY)  # stalled again: a new stall, a new alert
    assert "stalled 14 days" in smtp_server.wait_for(3)[2].text
    assert len(smtp_server.messages) == 3


def test_two_concurrent_scans_send_one_email_per_owner(db, session, smtp_server, make_user, make_deal, now):
    owners = [make_user(f"owner{i}@team.example") for i in range(3)]
    for owner in owners:
        for _ in range(5):
            make_deal(owner=owner, created_at=now - 20 * DAY)
    settings = settings_for(smtp_server)
    barrier = threading.Barrier(2)
    results = []
    errors: list[BaseException] = []

    def scan() -> None:
        engine = make_engine(db.url)  # its own engine and connections, like a second process
        try:
            barrier.wait()
            results.append(run_scan(settings, make_sessionmaker(engine), now=now))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sum(r.digests_sent for r in results) == 3 and sum(r.decided for r in results) == 15
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [o.email for o in owners]
    assert all(n.sent_at is not None for n in notifications(session))


def test_a_scan_holding_the_lock_makes_another_skip(db, smtp_server, make_user, make_deal, now):
    make_deal(owner=make_user(), created_at=now - 20 * DAY)
    other = make_engine(db.url)
    try:
        with scan_lock(other) as got:
            assert got
            result = run_scan(settings_for(smtp_server), db.sessions, now=now)
    finally:
        other.dispose()
    assert result.skipped == SKIPPED_BUSY and result.summary() == "skipped: another scan is running"
    assert run_scan(settings_for(smtp_server), db.sessions, now=now).digests_sent == 1


def test_smtp_down_loses_nothing_and_up_delivers_once(db, session, smtp_server, make_user, make_deal, now):
    make_deal(title="Acme renewal", owner=make_user("ann@team.example"), created_at=now - 20 * DAY)
    settings = settings_for(smtp_server)
    smtp_server.stop()

    down = run_scan(settings, db.sessions, now=now)

    assert (down.decided, down.digests_sent, down.digests_failed, down.ok) == (1, 0, 1, False)
    [note] = notifications(session)
    assert note.sent_at is None and note.send_attempts == 1
    assert f"SMTP 127.0.0.1:{smtp_server.port}:" in note.last_error and "refused" in note.last_error.lower()
    assert down.errors == [note.last_error]

    smtp_server.start()
    up = run_scan(settings, db.sessions, now=now + timedelta(hours=1))
    again = run_scan(settings, db.sessions, now=now + timedelta(hours=2))

    assert (up.decided, up.digests_sent, again.digests_sent) == (0, 1, 0)
    [mail] = smtp_server.wait_for(1)
    assert "Acme renewal" in mail.text and mail.rcpt_tos == ("ann@team.example",)
    [note] = notifications(session)
    assert (note.sent_at, note.last_error, note.send_attempts) == (now + timedelta(hours=1), None, 2)


def test_reminders_left_unsent_by_an_outage_appear_once_in_the_digest(
    db, session, smtp_server, make_user, make_deal, now
):
    make_deal(title="Acme renewal", owner=make_user("ann@team.example"), created_at=now - 20 * DAY)
    settings = settings_for(smtp_server)
    smtp_server.stop()
    run_scan(settings, db.sessions, now=now)
    run_scan(settings, db.sessions, now=now + 7 * DAY)
    smtp_server.start()
    run_scan(settings, db.sessions, now=now + 7 * DAY)
    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == "Threadline: 1 stalled deal" and mail.text.count("* Acme renewal") == 1
    assert [n.sent_at for n in notifications(session)] == [now + 7 * DAY] * 2


def test_follow_up_tasks_when_configured(db, session, smtp_server, make_user, make_deal, now):
    owner = make_user("ann@team.example")
    make_deal(title="Acme renewal", owner=owner, created_at=now - 20 * DAY)
    result = run_scan(settings_for(smtp_server, create_tasks=True), db.sessions, now=now)
    assert result.tasks_created == 1 and "1 follow-up tasks created" in result.summary()
    # the follow-up is due now: tomorrow it is an overdue task in the digest
    run_scan(settings_for(smtp_server, create_tasks=True), db.sessions, now=now + DAY)
    assert "* Follow up on stalled deal: Acme renewal: due" in smtp_server.wait_for(2)[1].text


def test_waiting_lead_reached_in_time_is_not_alerted(db, session, smtp_server, make_user, make_contact, now):
    rep = make_user("ann@team.example")
    reached = make_contact(name="Reached", owner=rep, created_at=now - 2 * DAY)
    email = Activity(
        kind=ActivityKind.EMAIL,
        direction=Direction.OUT,
        occurred_at=now - 2 * DAY + timedelta(hours=3),
        created_at=now,
        subject="Welcome",
    )
    email.contacts.append(reached)
    session.add(email)
    session.commit()
    make_contact(name="Forgotten", owner=rep, created_at=now - 2 * DAY)
    run_scan(settings_for(smtp_server), db.sessions, now=now)
    [mail] = smtp_server.wait_for(1)
    assert "Forgotten" in mail.text and "Reached" not in mail.text


def test_a_refused_owner_and_a_bad_address_do_not_stop_the_other_digests(
    db, session, smtp_server, make_user, make_deal, now
):
    ann = make_user("ann@team.example", name="Ann")
    gone = make_user("gone@team.example", name="Gone")
    broken = make_user("broken@team.example", name="Broken")
    broken.email = "broken@"  # a row written before addresses were checked
    session.commit()
    cid = make_user("cid@team.example", name="Cid")
    for owner in (ann, gone, broken, cid):
        make_deal(title=f"{owner.name}'s deal", owner=owner, created_at=now - 20 * DAY)
    smtp_server.refused.add("gone@team.example")
    settings = settings_for(smtp_server)

    result = run_scan(settings, db.sessions, now=now)

    assert (result.decided, result.digests_sent, result.digests_failed, result.ok) == (4, 2, 2, False)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(2)) == ["ann@team.example", "cid@team.example"]
    errors = {n.deal.title: n.last_error for n in notifications(session) if n.sent_at is None}
    assert set(errors) == {"Gone's deal", "Broken's deal"}
    assert "refused the message to gone@team.example: recipient refused" in errors["Gone's deal"]
    assert "550 5.1.1 No such user here" in errors["Gone's deal"]
    assert errors["Broken's deal"] == "not sent: 'broken@' is not an email address"
    assert sorted(result.errors) == sorted(errors.values())

    # fixed later: the retry sends what was left, and nothing twice
    smtp_server.refused.clear()
    broken.email = "broken@team.example"
    session.commit()
    retried = retry_unsent(settings, db.sessions, now=now + timedelta(minutes=15))
    assert (retried.digests_sent, retried.digests_failed) == (2, 0)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(4)[2:]) == [
        "broken@team.example",
        "gone@team.example",
    ]
    assert all(n.sent_at is not None for n in notifications(session))


def test_line_breaks_in_names_from_the_database_never_reach_a_header(
    db, session, smtp_server, make_user, make_deal, make_contact, now
):
    ann = make_user("ann@team.example")
    ann.name = "Ann\r\nBcc: evil@attacker.example"  # accepted by an older panel; refused since
    session.commit()
    bob = make_user("bob@team.example", name="Bob")
    make_deal(title="Pricing\r\nBcc: evil@attacker.example", owner=ann, created_at=now - 20 * DAY)
    make_contact(name="Lena\nBcc: evil@attacker.example", owner=ann, created_at=now - 30 * timedelta(hours=1))
    make_deal(title="Bob's deal", owner=bob, created_at=now - 20 * DAY)

    result = run_scan(settings_for(smtp_server), db.sessions, now=now)

    assert (result.digests_sent, result.digests_failed) == (2, 0)
    mails = {m.rcpt_tos: m for m in smtp_server.wait_for(2)}
    assert set(mails) == {("ann@team.example",), ("bob@team.example",)}
    mail = mails["ann@team.example",]
    assert mail.message["Bcc"] is None
    assert str(mail.message["To"]) == '"Ann Bcc: evil@attacker.example" <ann@team.example>'
    head = mail.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert not any(line.lower().startswith("bcc") for line in head.split("\r\n"))
    assert mail.text.startswith("Hello Ann Bcc: evil@attacker.example,\n")
    assert "Pricing" in mail.text and "Lena" in mail.text


def test_a_notification_that_cannot_be_worded_does_not_stop_the_digests(
    db, session, smtp_server, make_user, make_deal, now
):
    ann = make_user("ann@team.example")
    make_deal(title="Ann's deal", owner=ann, created_at=now - 20 * DAY)
    make_deal(title="Bob's deal", owner=make_user("bob@team.example"), created_at=now - 20 * DAY)
    session.add(
        Notification(
            key="task:odd",
            kind="overdue_task",
            user_id=ann.id,
            title="Task overdue: odd",
            detail={"task_title": "Odd", "due_at": "9999-12-31T23:00:00-05:00"},  # past the end of time
            created_at=now,
            send_attempts=0,
        )
    )
    session.commit()
    result = run_scan(settings_for(smtp_server), db.sessions, now=now)
    assert (result.digests_sent, result.digests_failed) == (2, 0)
    mails = {m.rcpt_tos[0]: m for m in smtp_server.wait_for(2)}
    assert "* Odd: due ?" in mails["ann@team.example"].text


# ---- schedule ---------------------------------------------------------------------------------------------


def test_default_schedule_fires_weekdays_at_eight_in_team_timezone():
    trigger = cron_trigger("0 8 * * mon-fri", "Europe/Paris")
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, saturday)
    assert fire.isoformat() == "2026-11-30T08:00:00+01:00"  # Monday 08:00 Paris
    numeric = cron_trigger("0 8 * * 1-5", "Europe/Paris")  # crontab numbering: 1 = Monday, 0/7 = Sunday
    assert numeric.get_next_fire_time(None, saturday) == fire
    sunday = cron_trigger("30 7 * * 0", "UTC").get_next_fire_time(None, saturday)
    assert sunday.isoformat() == "2026-11-29T07:30:00+00:00"
    with pytest.raises(ValueError, match="5 fields"):
        cron_trigger("every morning", "UTC")


def test_schedule_alerts_registers_coalescing_jobs(sqlite_db, smtp_server):
    scheduler = BackgroundScheduler(timezone="UTC")
    settings = settings_for(smtp_server)
    schedule_alerts(scheduler, settings, sqlite_db.sessions, lambda: datetime.now(UTC))
    schedule_alerts(
        scheduler, settings, sqlite_db.sessions, lambda: datetime.now(UTC)
    )  # replaces, no duplicate
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert sorted(jobs) == ["alerts", "alerts-retry"]
    scan = jobs["alerts"]
    assert (scan.coalesce, scan.max_instances, scan.misfire_grace_time) == (True, 1, 3600)
    assert str(scan.trigger) == str(cron_trigger("0 8 * * mon-fri", "UTC"))


def test_scheduled_job_fires_and_the_digest_arrives(db, smtp_server, make_user, make_deal):
    real_now = datetime.now(UTC)
    make_deal(title="Scheduled stall", owner=make_user("ann@team.example"), created_at=real_now - 30 * DAY)
    settings = settings_for(smtp_server, schedule="*/1 * * * * *")  # every second (6 fields: seconds first)
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_alerts(scheduler, settings, db.sessions, lambda: datetime.now(UTC))
    scheduler.start()
    try:
        [mail] = smtp_server.wait_for(1, timeout=10)
    finally:
        scheduler.shutdown(wait=True)
    assert "Scheduled stall" in mail.text and mail.rcpt_tos == ("ann@team.example",)


def test_retry_job_delivers_what_an_outage_left_unsent(db, smtp_server, make_user, make_deal, session):
    real_now = datetime.now(UTC)
    make_deal(title="Retried", owner=make_user("ann@team.example"), created_at=real_now - 30 * DAY)
    settings = settings_for(
        smtp_server, schedule="0 0 1 1 *"
    )  # the scan itself will not fire during the test
    smtp_server.stop()
    assert run_scan(settings, db.sessions, now=real_now).digests_failed == 1
    smtp_server.start()
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_alerts(
        scheduler, settings, db.sessions, lambda: datetime.now(UTC), retry_every=timedelta(seconds=1)
    )
    scheduler.start()
    try:
        [mail] = smtp_server.wait_for(1, timeout=10)
    finally:
        scheduler.shutdown(wait=True)
    assert "Retried" in mail.text
    assert [n.last_error for n in notifications(session)] == [None]


# ---- the command ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _drop_cli_log_handler():
    """main() logs to the stderr pytest captures; later log lines (aiosmtpd's thread) must not hit it."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_threadline", False)]:
        root.removeHandler(handler)


def write_config(tmp_path: Path, db, server) -> Path:
    path = tmp_path / "threadline.toml"
    path.write_text(
        f'[database]\nurl = "{db.url}"\n\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
        f'from_address = "alerts@team.example"\nbase_url = "{BASE_URL}"\ntimeout_seconds = 5\n',
        encoding="utf-8",
    )
    return path


def test_alerts_once_command_sends_and_reports(db, smtp_server, make_user, make_deal, tmp_path, capsys):
    real_now = datetime.now(UTC)
    deal = make_deal(title="CLI stall", owner=make_user("ann@team.example"), created_at=real_now - 30 * DAY)
    config = write_config(tmp_path, db, smtp_server)

    assert main(["--config", str(config), "alerts", "--once"]) == 0
    out = capsys.readouterr().out
    assert out == ("alerts: 1 notifications decided, 1 digests sent (1 notifications), 0 digests failed\n")
    [mail] = smtp_server.wait_for(1)
    assert deal_url(BASE_URL, deal.id) in mail.text

    assert main(["--config", str(config), "alerts", "--once", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["decided"], summary["digests_sent"], summary["ok"]) == (0, 0, True)
    assert len(smtp_server.messages) == 1

    assert main(["--config", str(config), "alerts"]) == 2
    assert "use `threadline alerts --once`" in capsys.readouterr().err


def test_alerts_once_exits_1_when_smtp_is_down(db, smtp_server, make_user, make_deal, tmp_path, capsys):
    make_deal(title="CLI stall", owner=make_user("ann@team.example"), created_at=datetime.now(UTC) - 30 * DAY)
    config = write_config(tmp_path, db, smtp_server)
    smtp_server.stop()
    assert main(["--config", str(config), "alerts", "--once"]) == 1
    captured = capsys.readouterr()
    assert "1 digests failed" in captured.out
    assert captured.err.splitlines()[-1].startswith(
        f"threadline: alerts: SMTP 127.0.0.1:{smtp_server.port}: "
    )
    assert "Traceback" not in captured.err
    smtp_server.start()
    assert main(["--config", str(config), "alerts", "--once"]) == 0
    assert len(smtp_server.wait_for(1)) == 1


def test_alerts_once_without_an_smtp_host_records_for_the_panel_and_exits_0(
    db, session, make_user, make_deal, tmp_path, capsys
):
    deal = make_deal(title="Panel stall", owner=make_user(), created_at=datetime.now(UTC) - 30 * DAY)
    config = tmp_path / "threadline.toml"
    config.write_text(f'[database]\nurl = "{db.url}"\n', encoding="utf-8")  # no [smtp]: the panel only

    assert main(["--config", str(config), "alerts", "--once"]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        "alerts: 1 notifications decided, recorded in the panel, "
        "no email sent ([smtp] host is not configured: alerts are shown in the panel only)\n"
    )
    assert "digests failed" not in captured.err and "Traceback" not in captured.err
    [note] = notifications(session)
    assert (note.deal_id, note.sent_at, note.last_error, note.send_attempts) == (deal.id, None, None, 0)

    assert main(["--config", str(config), "alerts", "--once", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["decided"], summary["emailed"], summary["digests_failed"], summary["ok"]) == (
        0,
        False,
        0,
        True,
    )
    [note] = notifications(session)
    assert (note.last_error, note.send_attempts) == (None, 0)


def test_a_long_digest_lists_the_first_alerts_and_links_to_the_rest(
    db, session, smtp_server, make_user, make_deal, now
):
    from daemon.alerts import DIGEST_SECTION_LIMIT

    owner = make_user("busy@team.example", name="Busy Owner")
    for n in range(DIGEST_SECTION_LIMIT + 5):
        make_deal(title=f"Old deal {n:02d}", owner=owner, created_at=now - 30 * DAY)

    run_scan(settings_for(smtp_server), db.sessions, now=now)

    [mail] = smtp_server.wait_for(1)
    assert mail.message["Subject"] == f"Threadline: {DIGEST_SECTION_LIMIT + 5} stalled deals"
    assert mail.text.count("* Old deal") == DIGEST_SECTION_LIMIT
    assert f"* and 5 more in Threadline: {BASE_URL}/admin/notifications/" in mail.text
    assert "and 5 more in Threadline</a>" in mail.html
