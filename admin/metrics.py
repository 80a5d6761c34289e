"""Prometheus metrics computed from the database at scrape time (the panel's `/metrics`).

One custom collector turns `models.health`'s snapshot into metric families on every scrape, so nothing is
counted in this process's memory: any panel process reports the same numbers, however many daemons and
panels share the database, and a restart loses nothing. The registry is this app's own (never the library's
global one), with the process, platform and garbage-collector collectors of the serving process beside it.

Adding a metric is adding a field to the snapshot in models/health.py and one family below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import migrate
from models.db import engine_of
from models.health import ExpectedMailbox, HealthSnapshot, MailboxState, take_snapshot

log = logging.getLogger("threadline.metrics")

Clock = Callable[[], datetime]


def threadline_version() -> str:
    try:
        return metadata.version("threadline")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_registry(
    sessions: sessionmaker[Session], expected: Callable[[], Sequence[ExpectedMailbox]], clock: Clock
) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(DatabaseCollector(sessions, expected, clock))
    return registry


class DatabaseCollector:
    """Reads the health snapshot on each scrape; a database that cannot be read shows as `..._up 0`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        expected: Callable[[], Sequence[ExpectedMailbox]],
        clock: Clock,
    ) -> None:
        self.sessions = sessions
        self.expected = expected
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "threadline_build", "Threadline's version.", value={"version": threadline_version()}
        )
        schema = migrate.schema_status(engine_of(self.sessions))
        yield _gauge(
            "threadline_database_up",
            "1 when the database answers.",
            schema.state is not migrate.SchemaState.UNREACHABLE,
        )
        yield _gauge(
            "threadline_database_schema_current",
            "1 when the database is migrated to this version's schema.",
            schema.problem is None,
        )
        if schema.problem is not None:
            log.warning("metrics: %s", schema.problem)
            return
        try:
            with self.sessions() as session:
                snapshot = take_snapshot(session, self.expected(), now=self.clock())
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the health snapshot: %s", exc)
            return
        yield from mailbox_families(snapshot)
        yield from lease_families(snapshot)
        yield from alert_families(snapshot)
        yield from webhook_families(snapshot)


def _gauge(name: str, documentation: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def mailbox_families(snapshot: HealthSnapshot) -> Iterator[Metric]:
    now = snapshot.taken_at
    labels = ["mailbox"]
    state = GaugeMetricFamily(
        "threadline_mailbox_state",
        "1 for the mailbox's state (see MailboxState: ok, failing, stale, ...), 0 for the others.",
        labels=["mailbox", "state"],
    )
    last_success = GaugeMetricFamily(
        "threadline_mailbox_last_success_timestamp_seconds",
        "When the mailbox last synced successfully (Unix time); absent when it never did.",
        labels=labels,
    )
    since_success = GaugeMetricFamily(
        "threadline_mailbox_seconds_since_last_success",
        "Seconds since the mailbox last synced successfully; absent when it never did.",
        labels=labels,
    )
    seen = CounterMetricFamily(
        "threadline_mailbox_messages_seen", "Messages the sync has fetched from the mailbox.", labels=labels
    )
    logged = CounterMetricFamily(
        "threadline_mailbox_messages_logged",
        "Messages from the mailbox filed in the CRM (new activities and copies of known ones).",
        labels=labels,
    )
    waiting = GaugeMetricFamily(
        "threadline_mailbox_messages_waiting",
        "Messages above the sync cursor at the last poll, summed over the mailbox's folders: on the server "
        "but not yet fetched and handled (0 once a poll handled them all).",
        labels=labels,
    )
    failures = GaugeMetricFamily(
        "threadline_mailbox_consecutive_failures",
        "Failed sync attempts in a row (0 when the last attempt worked).",
        labels=labels,
    )
    quarantined = GaugeMetricFamily(
        "threadline_mailbox_quarantined_messages",
        "Messages from the mailbox set aside in quarantine and not resolved.",
        labels=labels,
    )
    backoff = GaugeMetricFamily(
        "threadline_mailbox_backoff_seconds",
        "Seconds until the next attempt of a failing mailbox (0 when it is not backing off).",
        labels=labels,
    )
    pass_seconds = GaugeMetricFamily(
        "threadline_mailbox_last_pass_seconds",
        "How long the daemon's last pass over the mailbox that fetched mail took; absent before one.",
        labels=labels,
    )
    pass_messages = GaugeMetricFamily(
        "threadline_mailbox_last_pass_messages",
        "Messages that pass fetched; absent before one.",
        labels=labels,
    )
    for mailbox in snapshot.mailboxes:
        name = [mailbox.name]
        if mailbox.last_pass_seconds is not None:
            pass_seconds.add_metric(name, mailbox.last_pass_seconds)
            pass_messages.add_metric(name, mailbox.last_pass_messages or 0)
        for each in MailboxState:
            state.add_metric([mailbox.name, each.value], float(mailbox.state is each))
        if mailbox.last_success_at is not None:
            last_success.add_metric(name, mailbox.last_success_at.timestamp())
            since_success.add_metric(name, mailbox.seconds_since_success(now) or 0.0)
        seen.add_metric(name, mailbox.messages_seen)
        logged.add_metric(name, mailbox.messages_logged)
        waiting.add_metric(name, mailbox.messages_waiting)
        failures.add_metric(name, mailbox.consecutive_failures)
        quarantined.add_metric(name, mailbox.quarantined)
        backoff.add_metric(name, mailbox.backoff_seconds(now))
    yield from (state, last_success, since_success, seen, logged, waiting, failures, quarantined, backoff)
    yield from (pass_seconds, pass_messages)
    yield _gauge(
        "threadline_emails_needing_review",
        "Logged emails waiting for someone to choose their deal.",
        snapshot.emails_needing_review,
    )


def lease_families(snapshot: HealthSnapshot) -> Iterator[Metric]:
    """Who syncs each mailbox, whether its IDLE is up, and each daemon's heartbeat (models.leases)."""
    now = snapshot.taken_at
    holder = GaugeMetricFamily(
        "threadline_mailbox_lease_holder",
        "1 for the daemon (host:pid#id) syncing the mailbox now; no sample while no live daemon holds it.",
        labels=["mailbox", "daemon"],
    )
    held = GaugeMetricFamily(
        "threadline_mailbox_lease_held", "1 when a live daemon syncs the mailbox, else 0.", labels=["mailbox"]
    )
    idle = GaugeMetricFamily(
        "threadline_mailbox_idle_connected",
        "1 when the mailbox's holder has its IDLE connection up (new mail comes in at once), else 0.",
        labels=["mailbox"],
    )
    for mailbox in snapshot.mailboxes:
        if mailbox.state in (MailboxState.PAUSED, MailboxState.UNCONFIGURED):
            continue
        if mailbox.holder is not None:
            holder.add_metric([mailbox.name, mailbox.holder.label], 1.0)
        held.add_metric([mailbox.name], float(mailbox.holder is not None))
        idle.add_metric([mailbox.name], float(mailbox.idle_connected))
    yield from (holder, held, idle)
    labels = ["daemon", "host", "pid"]
    up = GaugeMetricFamily("threadline_daemon_up", "1 while the daemon is alive, else 0.", labels=labels)
    heartbeat = GaugeMetricFamily(
        "threadline_daemon_last_heartbeat_timestamp_seconds",
        "When the daemon last reported (Unix time).",
        labels=labels,
    )
    since = GaugeMetricFamily(
        "threadline_daemon_seconds_since_heartbeat", "Seconds since the daemon last reported.", labels=labels
    )
    mailboxes = GaugeMetricFamily(
        "threadline_daemon_mailboxes", "Mailboxes the daemon syncs now.", labels=labels
    )
    for daemon in snapshot.daemons:
        names = [daemon.label, daemon.host, str(daemon.pid)]
        up.add_metric(names, float(daemon.alive))
        heartbeat.add_metric(names, daemon.heartbeat_at.timestamp())
        since.add_metric(names, daemon.seconds_since_heartbeat(now))
        mailboxes.add_metric(names, daemon.mailboxes_held)
    yield from (up, heartbeat, since, mailboxes)
    yield _gauge(
        "threadline_daemons_alive", "Daemons alive now.", sum(1 for d in snapshot.daemons if d.alive)
    )


def alert_families(snapshot: HealthSnapshot) -> Iterator[Metric]:
    labels = ["kind"]
    decided = CounterMetricFamily("threadline_alerts_decided", "Alerts decided, by kind.", labels=labels)
    sent = CounterMetricFamily(
        "threadline_alerts_sent", "Alerts emailed in a digest, by kind.", labels=labels
    )
    unsent = GaugeMetricFamily(
        "threadline_alerts_unsent", "Alerts waiting for the next digest, by kind.", labels=labels
    )
    failing = GaugeMetricFamily(
        "threadline_alerts_failing",
        "Unsent alerts whose last attempt to email them failed, by kind.",
        labels=labels,
    )
    for counts in snapshot.alerts.kinds:
        decided.add_metric([counts.kind], counts.decided)
        sent.add_metric([counts.kind], counts.sent)
        unsent.add_metric([counts.kind], counts.unsent)
        failing.add_metric([counts.kind], counts.failing)
    yield from (decided, sent, unsent, failing)
    yield CounterMetricFamily(
        "threadline_alert_digests_sent",
        "Digest emails sent (one owner's alerts in one email).",
        value=snapshot.alerts.digests_sent,
    )
    yield _gauge(
        "threadline_alert_recipients_failing",
        "Owners whose digest could not be sent on the last attempt.",
        snapshot.alerts.recipients_failing,
    )


def webhook_families(snapshot: HealthSnapshot) -> Iterator[Metric]:
    counts = snapshot.webhooks
    yield CounterMetricFamily(
        "threadline_webhook_deliveries_sent",
        "Webhook deliveries a receiver accepted.",
        value=counts.delivered,
    )
    yield CounterMetricFamily(
        "threadline_webhook_attempts_failed",
        "Webhook delivery attempts a receiver refused or did not answer.",
        value=counts.failed_attempts,
    )
    yield _gauge(
        "threadline_webhook_deliveries_waiting", "Webhook deliveries not accepted yet.", counts.waiting
    )
    yield _gauge(
        "threadline_webhook_deliveries_failing",
        "Webhook deliveries not accepted yet whose last attempt failed.",
        counts.failing,
    )
    yield _gauge(
        "threadline_webhook_subscriptions_paused",
        "Webhook subscriptions paused after their deliveries failed for too long.",
        counts.paused_subscriptions,
    )
