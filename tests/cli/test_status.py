"""`threadline status`: each mailbox's health from what the real sync recorded; exit 1 when one fails."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from models.schema import FolderSyncState, MailboxStatus
from tests.cli.conftest import Result
from tests.fixtures.operations import *  # noqa: F403
from tests.fixtures.operations import Team
from threadline.cli import main


@pytest.fixture
def status(capsys: pytest.CaptureFixture[str]):
    def run(config: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["--config", str(config), "status", *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def test_table_and_json_show_each_mailbox_and_exit_1_while_one_is_failing(
    team_database: Team, status
) -> None:
    result = status(team_database.config)
    assert result.code == 1, result.err
    lines = result.out.splitlines()
    sales = next(line for line in lines if line.startswith("sales"))
    support = next(line for line in lines if line.startswith("support"))
    assert "ok" in sales and f" {team_database.logged} " in f" {sales} "
    assert " 1 " in sales.split("│")[7] + " "  # one message in quarantine
    assert "failing" in support and "1 failure: " in support and "login refused" in support
    assert "(in " in support  # the backoff's next attempt
    assert "not-the-password" not in result.out
    summary = lines[-1]
    assert summary.startswith("2 mailboxes: 1 ok, 1 failing; 1 in quarantine;"), summary
    assert f"alerts: {team_database.digests_sent} digest" in summary and "1 owner failing" in summary

    # --json carries the same facts
    result = status(team_database.config, "--json")
    assert result.code == 1
    status = json.loads(result.out)
    assert status["ok"] is False
    sales, support = status["mailboxes"]
    assert (sales["name"], sales["state"], sales["messages_logged"], sales["quarantined"]) == (
        "sales",
        "ok",
        team_database.logged,
        1,
    )
    assert sales["seconds_since_success"] < 300 and sales["last_error"] is None
    assert (support["state"], support["consecutive_failures"]) == ("failing", 1)
    assert "login refused" in support["last_error"] and support["next_attempt_at"].endswith("Z")
    assert status["alerts"]["digests_sent"] == team_database.digests_sent
    assert status["alerts"]["recipients_failing"] == 1
    assert status["alerts"]["kinds"]["overdue_task"]["failing"] >= 1


def test_healthy_mailboxes_exit_0_and_a_silent_one_turns_stale(team_database: Team, status, tmp_path) -> None:
    team = team_database
    only_good = tmp_path / "good.toml"
    config = team.config.read_text(encoding="utf-8")
    only_good.write_text(config[: config.index('[[mailboxes]]\nname = "support"')], encoding="utf-8")
    healthy = status(only_good)
    assert healthy.code == 0, healthy.out
    # the support mailbox is no longer configured: shown for what the database knows, not as a failure
    assert "unconfigured" in healthy.out and healthy.out.splitlines()[-1].startswith("1 mailbox: 1 ok;")

    # the clock moves on 20 minutes and nothing syncs the mailbox meanwhile
    twenty_minutes_ago = datetime.now(UTC) - timedelta(minutes=20)
    with team.db.sessions() as session:
        for table in (MailboxStatus, FolderSyncState):
            session.execute(update(table).values(last_success_at=twenty_minutes_ago))
        session.commit()
    stale = status(only_good, "--json")
    assert stale.code == 1
    state = json.loads(stale.out)["mailboxes"][0]
    assert state["state"] == "stale" and 19 * 60 < state["seconds_since_success"] < 30 * 60


def test_a_configured_mailbox_that_never_synced_and_an_unmigrated_database(status, tmp_path, db) -> None:
    config = tmp_path / "fresh.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n[[mailboxes]]\nname = "new"\nhost = "127.0.0.1"\nsecurity = "none"\n'
        'username = "new"\npassword_env = "HOME"\n',
        encoding="utf-8",
    )
    result = status(config)
    assert result.code == 1
    assert "never synced" in result.out
    assert result.out.splitlines()[-1].startswith("1 mailbox: 1 never synced")

    empty = tmp_path / "empty.toml"
    empty.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "empty.db"}"\n', encoding="utf-8")
    result = status(empty)
    assert result.code == 1 and "run `threadline db upgrade`" in result.err


def test_status_names_each_mailboxs_holder_and_lists_the_daemons(status, tmp_path, db) -> None:
    from daemon.leases import open_leases
    from models.db import transaction
    from models.leases import record_idle

    names = ["north", "south", "east"]
    config = tmp_path / "leased.toml"
    config.write_text(
        f'[database]\nurl = "{db.url}"\n'
        + "".join(
            f'[[mailboxes]]\nname = "{n}"\nhost = "127.0.0.1"\nsecurity = "none"\nusername = "{n}"\n'
            'password_env = "HOME"\n'
            for n in names
        ),
        encoding="utf-8",
    )
    daemons = []
    for _ in range(1 if db.kind == "sqlite" else 2):
        mine: set[str] = set()
        leases = open_leases(
            db.engine,
            wanted=lambda: names,
            acquire=mine.add,
            release=lambda n, _a, m=mine: m.discard(n),
            tick=0.3,
        )
        leases.start()
        daemons.append((leases, mine))
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while sum(len(m) for _, m in daemons) < len(names) or any(not m for _, m in daemons):
            assert datetime.now(UTC) < deadline, "the leases were not taken"
            time.sleep(0.05)
        leases, mine = daemons[0]
        idle_box = sorted(mine)[0]
        with transaction(db.sessions) as session:
            record_idle(session, idle_box, leases.daemon_id, now=datetime.now(UTC))
        result = status(config, "--json")
        report = json.loads(result.out)
        alive = [d for d in report["daemons"] if d["alive"]]
        assert len(alive) == len(daemons) and sum(d["mailboxes"] for d in alive) == len(names)
        labels = {d["daemon"] for d in alive}
        for mailbox in report["mailboxes"]:
            assert mailbox["holder"] in labels
            assert mailbox["idle_connected"] is (mailbox["name"] == idle_box)
        table = status(config).out
        assert "holder" in table and "heartbeat" in table and table.count(" alive ") == len(daemons)
        assert "no daemon" not in table
    finally:
        for leases, _ in daemons:
            leases.close()
    stopped = json.loads(status(config, "--json").out)
    assert all(m["holder"] is None for m in stopped["mailboxes"])
    assert [d["alive"] for d in stopped["daemons"]] == [False] * len(daemons)
    assert "no daemon" in status(config).out
