"""/healthz, /readyz and /metrics: what a load balancer, systemd and Prometheus see, on both databases."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from admin.app import create_app
from daemon.imap import ImapSession
from daemon.matching import Team as MatchingTeam
from daemon.sync import sync_mailbox
from models import migrate
from models.db import make_engine, make_sessionmaker
from settings import MetricsSettings, Secret, Settings
from tests.admin.conftest import settings_for
from tests.fixtures.database import TestDatabase
from tests.fixtures.dovecot import DovecotServer
from tests.fixtures.operations import *  # noqa: F403
from tests.fixtures.operations import Team, _message
from threadline.cli import main

TOKEN = "scrape-token-0123456789abcdef"
NOBODY_LISTENS = "postgresql+psycopg://postgres@127.0.0.1:9/threadline"


def with_metrics(settings: Settings) -> Settings:
    return replace(settings, metrics=MetricsSettings(token=Secret(TOKEN, "test")))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: Flask, token: str | None = TOKEN) -> tuple[int, str, Samples]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = app.test_client().get("/metrics", headers=headers)
    samples: Samples = {}
    if response.status_code == 200:
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return response.status_code, response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def unreachable_app() -> Iterator[Flask]:
    """The panel pointed at a PostgreSQL nobody listens on."""
    engine = make_engine(NOBODY_LISTENS)
    settings = with_metrics(settings_for(NOBODY_LISTENS))
    yield create_app(settings, make_sessionmaker(engine))
    engine.dispose()


def test_healthz_answers_without_login_or_database(unreachable_app: Flask) -> None:
    response = unreachable_app.test_client().get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_ready_on_a_current_schema_and_says_why_not_otherwise(
    db: TestDatabase, unreachable_app: Flask, tmp_path, caplog
) -> None:
    app = create_app(settings_for(db.url), db.sessions)
    ready = app.test_client().get("/readyz")
    assert (ready.status_code, ready.text) == (200, "ready\n")

    down = unreachable_app.test_client().get("/readyz")
    assert (down.status_code, down.text) == (503, "not ready: database unreachable\n")
    assert "127.0.0.1" not in down.text  # the driver's details go to the log only
    assert any(
        "database unreachable" in r.getMessage() and "port 9" in r.getMessage() for r in caplog.records
    )

    empty_url = f"sqlite:///{tmp_path / 'empty.db'}"
    empty = make_engine(empty_url)
    response = create_app(settings_for(empty_url), make_sessionmaker(empty)).test_client().get("/readyz")
    assert response.status_code == 503 and "database is empty" in response.text
    empty.dispose()

    migrate.downgrade(db.engine, "0001")  # an older schema: this version needs an upgrade first
    behind = app.test_client().get("/readyz")
    assert behind.status_code == 503
    assert (
        behind.text == "not ready: database schema is older than this version: run `threadline db upgrade`\n"
    )
    migrate.upgrade(db.engine)
    assert app.test_client().get("/readyz").status_code == 200


def test_metrics_are_off_by_default_and_need_the_bearer_token(db: TestDatabase) -> None:
    default = create_app(settings_for(db.url), db.sessions).test_client().get("/metrics")
    assert default.status_code == 404 and "set [metrics] token_env or token_file" in default.text

    app = create_app(with_metrics(settings_for(db.url)), db.sessions)
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "threadline_" not in refused.text
    status, text, _ = scrape(app)
    assert status == 200 and "threadline_database_up 1.0" in text


def test_metrics_report_what_the_database_knows(team_database: Team) -> None:
    team = team_database
    settings = with_metrics(
        replace(settings_for(team.db.url), mailboxes=(team.good, team.bad), team=team.settings.team)
    )
    app = create_app(settings, team.db.sessions)
    status, text, samples = scrape(app)
    assert status == 200
    assert (
        value(samples, "threadline_database_up") == 1
        and value(samples, "threadline_database_schema_current") == 1
    )

    # the healthy mailbox, synced a moment ago, with one message in quarantine
    assert value(samples, "threadline_mailbox_state", mailbox="sales", state="ok") == 1
    assert value(samples, "threadline_mailbox_state", mailbox="sales", state="failing") == 0
    assert 0 <= value(samples, "threadline_mailbox_seconds_since_last_success", mailbox="sales") < 300
    assert value(samples, "threadline_mailbox_messages_logged_total", mailbox="sales") == team.logged
    assert value(samples, "threadline_mailbox_messages_seen_total", mailbox="sales") == team.logged
    assert value(samples, "threadline_mailbox_quarantined_messages", mailbox="sales") == 1
    assert value(samples, "threadline_mailbox_consecutive_failures", mailbox="sales") == 0
    assert value(samples, "threadline_mailbox_backoff_seconds", mailbox="sales") == 0

    # the mailbox with the wrong password: failing, backing off, never synced
    assert value(samples, "threadline_mailbox_state", mailbox="support", state="failing") == 1
    assert value(samples, "threadline_mailbox_consecutive_failures", mailbox="support") == 1
    assert value(samples, "threadline_mailbox_backoff_seconds", mailbox="support") > 60
    assert ("threadline_mailbox_seconds_since_last_success", (("mailbox", "support"),)) not in samples

    # alert digests: the first scan's were sent, the owner with the overdue task is failing
    assert value(samples, "threadline_alert_digests_sent_total") == team.digests_sent
    assert value(samples, "threadline_alert_recipients_failing") == 1
    assert value(samples, "threadline_alerts_sent_total", kind="stalled_deal") >= 1
    assert value(samples, "threadline_alerts_failing", kind="overdue_task") >= 1
    assert value(samples, "threadline_alerts_unsent", kind="overdue_task") >= 1

    # the serving process, and no secret of the configuration anywhere
    assert value(samples, "process_resident_memory_bytes") > 0
    assert "threadline_build_info" in text
    for secret in ("not-the-password", team.good.password.reveal(), TOKEN):
        assert secret not in text

    # nothing is counted in memory: another panel process on its own connections reports the same
    other_engine = make_engine(team.db.url)
    other = scrape(create_app(settings, make_sessionmaker(other_engine)))[2]
    other_engine.dispose()

    def database_numbers(found: Samples) -> Samples:
        return {k: v for k, v in found.items() if k[0].startswith("threadline_") and "seconds" not in k[0]}

    assert database_numbers(other) == database_numbers(samples) and len(database_numbers(samples)) > 20


def test_metrics_survive_a_database_outage(unreachable_app: Flask) -> None:
    status, _, samples = scrape(unreachable_app)
    assert status == 200
    assert value(samples, "threadline_database_up") == 0
    assert not any(name.startswith("threadline_mailbox_") for name, _ in samples)
    assert value(samples, "process_resident_memory_bytes") > 0


def test_messages_waiting_counts_what_a_stopped_poll_left_above_the_cursor(
    team_database: Team, dovecot: DovecotServer, capsys: pytest.CaptureFixture[str]
) -> None:
    team = team_database
    to = team.good.address or ""
    now = datetime.now(UTC)
    new = [_message(f"P{n} <p{n}@new{n}.example>", to, f"Ask {n}", when=now) for n in range(7)]
    dovecot.append(team.good.username, "INBOX", new)
    stop = threading.Event()

    class StopsAfterOneBatch(ImapSession):
        def fetch_messages(self, uids: Any) -> Any:
            stop.set()
            return super().fetch_messages(uids)

    def poll(**kwargs: Any) -> None:
        matching = replace(team.settings.matching, batch_size=2)
        mailboxes = MatchingTeam.of(team.settings.team, [team.good])
        result = sync_mailbox(
            team.good, team.db.sessions, matching=matching, team=mailboxes,
            now_fn=lambda: datetime.now(UTC), **kwargs,
        )  # fmt: skip
        assert result.error is None, result

    def seen_by_a_user() -> tuple[float, int, str]:
        settings = with_metrics(replace(settings_for(team.db.url), mailboxes=(team.good, team.bad)))
        samples = scrape(create_app(settings, team.db.sessions))[2]
        metric = value(samples, "threadline_mailbox_messages_waiting", mailbox="sales")
        capsys.readouterr()
        main(["--config", str(team.config), "status", "--json"])
        as_json = json.loads(capsys.readouterr().out)["mailboxes"][0]["messages_waiting"]
        main(["--config", str(team.config), "status"])
        sales = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sales"))
        return metric, as_json, sales.split("│")[5].strip()

    assert seen_by_a_user() == (0, 0, "0")  # the fixture's poll handled all it found
    poll(stop=stop, imap_factory=StopsAfterOneBatch)  # one batch of 2 of the 7 new messages, then stopped
    assert seen_by_a_user() == (5, 5, "5")
    poll()
    assert seen_by_a_user() == (0, 0, "0")


def test_metrics_count_webhook_deliveries_sent_failed_waiting_and_paused(db: TestDatabase) -> None:
    from datetime import timedelta

    from models.secrets import SecretBox, generate_key
    from models.webhooks import claim_due, enqueue, record_delivered, record_failed, subscribe

    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    box = SecretBox([generate_key()])
    with db.sessions() as session:
        for url in ("https://hooks.example.com/a", "https://hooks.example.com/b"):
            subscribe(session, target_url=url, events=["contact.created"], box=box, now=now)
        for n in range(3):  # three events, each to both subscriptions: six deliveries
            enqueue(session, "contact.created", {"id": n}, now=now)
        session.commit()
        due = claim_due(session, now=now, limit=10, lease=timedelta(minutes=1))
        by_url = sorted(due, key=lambda d: (d.target_url, d.id))
        accepted, refused = by_url[:3], by_url[3:]  # /a accepts, /b refuses
        record_delivered(session, [d.id for d in accepted], now=now)
        for delivery in refused[:2]:  # refused within the retry period: waiting for the next attempt
            assert (
                record_failed(session, delivery, "HTTP 500", now=now, retry_for=timedelta(hours=24)) is False
            )
        # the last one is refused after retrying for a day: its subscription pauses
        assert record_failed(session, refused[2], "HTTP 500", now=now, retry_for=timedelta(0)) is True
        session.commit()

    app = create_app(with_metrics(settings_for(db.url)), db.sessions)
    status, _, samples = scrape(app)
    assert status == 200
    assert value(samples, "threadline_webhook_deliveries_sent_total") == 3
    assert value(samples, "threadline_webhook_attempts_failed_total") == 3
    assert value(samples, "threadline_webhook_deliveries_waiting") == 3
    assert value(samples, "threadline_webhook_deliveries_failing") == 3
    assert value(samples, "threadline_webhook_subscriptions_paused") == 1
