"""The long-running daemon: one poll job per mailbox on APScheduler, IDLE watchers, the alert schedule.

Each mailbox's poll is one APScheduler job (max_instances=1, so a mailbox is never synced twice at once)
that keeps its IMAP connections open between polls (one per folder: see daemon.sync.MailboxConnections), so
a poll with nothing new costs one STATUS round trip per folder; all mailboxes share one pool of parser
processes (daemon.workers);
an IDLE watcher per mailbox only pulls that job's next run forward when the server signals new mail. A
failing mailbox backs off (its next attempt time is kept in the database by the sync) and never stops the
others. Stopping is cooperative: a signal sets `stop`, running syncs finish their batch and commit, and
`run()` returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import ImapAuthError, ImapError, ImapSession
from daemon.matching import Team
from daemon.sync import MailboxConnections, SyncResult, mailbox_target, sync_mailbox
from daemon.workers import ParserPool
from models.schema import MailboxStatus
from settings import MailboxSettings, Settings

log = logging.getLogger("threadline.daemon")

# Servers drop an IDLE after 30 minutes (RFC 2177); renew comfortably before that.
IDLE_RENEW_SECONDS = 25 * 60
IDLE_RETRY_SECONDS = 30.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon:
    """Runs every configured mailbox's sync on its interval, plus IDLE and the alert scan, until stopped."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        stop: threading.Event,
        now_fn: Callable[[], datetime] = utcnow,
        with_alerts: bool = True,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.stop = stop
        self.now_fn = now_fn
        self.with_alerts = with_alerts
        workers = max(4, len(settings.mailboxes) + 2)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self._watchers: list[threading.Thread] = []
        self.team = Team.of(settings.team, settings.mailboxes)
        # shared by every mailbox's polls: parser processes start with the first body to parse
        self.parser = ParserPool(settings.matching)
        # kept open from poll to poll, one connection per folder; each is used by its mailbox's job only
        self._connections = {m.name: MailboxConnections(m) for m in settings.mailboxes}

    def run(self) -> int:
        if not self.settings.mailboxes:
            log.warning("no [[mailboxes]] configured in %s: nothing to sync", self.settings.source)
        for mailbox in self.settings.mailboxes:
            self.scheduler.add_job(
                self.poll,
                IntervalTrigger(seconds=mailbox.poll_seconds, timezone=UTC),
                args=[mailbox],
                id=self._job_id(mailbox),
                name=f"sync {mailbox.name}",
                next_run_time=datetime.now(UTC),
            )
        if self.with_alerts and self.settings.alerts.enabled:
            from daemon.alerts import schedule_alerts

            schedule_alerts(self.scheduler, self.settings, self.sessions, self.now_fn)
        self.scheduler.start()
        for mailbox in self.settings.mailboxes:
            if mailbox.idle:
                watcher = threading.Thread(
                    target=self.watch_idle, args=[mailbox], name=f"idle-{mailbox.name}", daemon=True
                )
                watcher.start()
                self._watchers.append(watcher)
        log.info("daemon started: %d mailbox(es)", len(self.settings.mailboxes))
        self.stop.wait()
        log.info("stopping: finishing the current batches")
        # wait=True lets running syncs notice `stop` between batches, commit and return
        self.scheduler.shutdown(wait=True)
        for connections in self._connections.values():
            connections.close()
        self.parser.close()
        for watcher in self._watchers:
            watcher.join(timeout=1.0)
        log.info("daemon stopped")
        return 0

    @staticmethod
    def _job_id(mailbox: MailboxSettings) -> str:
        return f"sync:{mailbox.name}"

    def poll(self, mailbox: MailboxSettings) -> SyncResult | None:
        if self.stop.is_set():
            return None
        waiting_until = self._backoff_until(mailbox)
        if waiting_until is not None:
            log.debug("%s: backing off until %s", mailbox.name, waiting_until.isoformat())
            return None
        result = sync_mailbox(
            mailbox, self.sessions, matching=self.settings.matching, team=self.team, now_fn=self.now_fn,
            stop=self.stop, connections=self._connections[mailbox.name], parser=self.parser,
        )  # fmt: skip
        if result.error:
            log.warning(result.summary())
        else:
            log.info(result.summary())
        return result

    def _backoff_until(self, mailbox: MailboxSettings) -> datetime | None:
        with self.sessions() as session:
            next_attempt = session.scalar(
                select(MailboxStatus.next_attempt_at).where(MailboxStatus.mailbox == mailbox.name)
            )
        if next_attempt is not None and next_attempt > self.now_fn():
            return next_attempt
        return None

    def wake(self, mailbox: MailboxSettings) -> None:
        """Run the mailbox's sync now (new mail was signalled), unless it is backing off."""
        job = self.scheduler.get_job(self._job_id(mailbox))
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def watch_idle(self, mailbox: MailboxSettings) -> None:
        """Hold an IDLE on INBOX and wake the poll job on new mail; reconnect after errors."""
        failures = 0
        while not self.stop.is_set():
            try:
                with ImapSession(mailbox_target(mailbox)) as imap:
                    if not imap.supports_idle:
                        log.info(
                            "%s: server has no IDLE, polling every %d s", mailbox.name, mailbox.poll_seconds
                        )
                        return
                    imap.select_readonly("INBOX")
                    failures = 0
                    renew_at = datetime.now(UTC) + timedelta(seconds=IDLE_RENEW_SECONDS)
                    while not self.stop.is_set() and datetime.now(UTC) < renew_at:
                        # short IDLE rounds keep shutdown prompt; each round ends with DONE
                        if imap.idle_wait(timeout=5.0):
                            log.debug("%s: new mail signalled", mailbox.name)
                            self.wake(mailbox)
            except ImapAuthError:
                return  # the poll job reports and backs off on credentials; IDLE would only hammer the server
            except ImapError as exc:
                failures += 1
                log.debug("%s: IDLE connection lost (%s); retrying", mailbox.name, exc)
                self.stop.wait(min(IDLE_RETRY_SECONDS * failures, 600))
            except Exception:
                failures += 1
                log.exception("%s: IDLE watcher failed; retrying", mailbox.name)
                self.stop.wait(min(IDLE_RETRY_SECONDS * failures, 600))
