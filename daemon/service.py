"""The long-running daemon: one poll job per mailbox on APScheduler, IDLE watchers, the alert schedule.

The mailboxes are the effective list (models.mailboxes.effective_mailboxes: the config file's [[mailboxes]]
plus the panel's), read again every reload interval, so a mailbox added, changed, paused or removed in the
panel is picked up without a restart. Each mailbox runs as one `_RunningMailbox`: started by
`start_mailbox`, stopped by `stop_mailbox`; a changed one (its settings, or a new OAuth grant) is stopped and
started again.

Which mailboxes this daemon runs is decided by its leases (daemon.leases): the reload keeps the list of
mailboxes there are, the leases take this daemon's share of them (all of them on SQLite, where one daemon
runs; an even share on PostgreSQL, where several may) and call `start_mailbox` and `stop_mailbox`. Giving a
mailbox back shuts its IDLE connection at once and lets a running poll commit its batch first.

Each mailbox's poll is one APScheduler job (max_instances=1, so a mailbox is never synced twice at once)
that keeps its IMAP connections open between polls (one per folder: see daemon.sync.MailboxConnections), so
a poll with nothing new costs one STATUS round trip per folder; all mailboxes share one pool of parser
processes (daemon.workers); OAuth mailboxes sign in through daemon.credentials (access tokens renewed before
they expire).
An IDLE watcher per mailbox only pulls that job's next run forward when the server signals new mail. A job
of its own links earlier mail (daemon.relink) every reload interval (at most the shortest poll interval),
when a contact gained an address or a company a domain. A
failing mailbox backs off (its next attempt time is kept in the database by the sync) and never stops the
others. Stopping is cooperative: a signal sets `stop`, running syncs finish their batch and commit, and
`run()` returns.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from daemon.credentials import MailboxCredentials
from daemon.imap import ImapAuthError, ImapError, ImapSession, ImapTarget
from daemon.leases import open_leases, singleton
from daemon.matching import Team
from daemon.relink import RelinkResult, prune, relink_history
from daemon.sync import MailboxConnections, SyncResult, sync_mailbox
from daemon.webhooks import WebhookSender
from daemon.workers import ParserPool
from models.db import engine_of, transaction
from models.health import record_pass
from models.leases import record_idle
from models.mailboxes import effective_mailboxes, grant_versions
from models.schema import MailboxStatus
from models.secrets import secret_box
from settings import MailboxSettings, Settings

log = logging.getLogger("threadline.daemon")

WEBHOOK_EXECUTOR = "webhooks"
WEBHOOK_POLL_SECONDS = 2.0

# Servers drop an IDLE after 30 minutes (RFC 2177); renew comfortably before that.
IDLE_RENEW_SECONDS = 25 * 60
IDLE_RETRY_SECONDS = 30.0
# How often the mailbox list is read again, at most: the shortest poll interval when that is shorter.
RELOAD_SECONDS = 60.0
# Poll jobs run in this many threads at least (mailboxes added later share them; a job waits its turn).
MIN_WORKERS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class _RunningMailbox:
    """One mailbox the daemon syncs: its settings as started, its open connections, its own stop signal.

    `lock` is held by a poll for its whole run, so stopping the mailbox waits for the batch in hand to
    commit before closing the connections.
    """

    mailbox: MailboxSettings
    connections: MailboxConnections
    grant_version: datetime | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    watcher: threading.Thread | None = None
    idle: ImapSession | None = None  # the IDLE connection while it is up (aborted when the lease goes)


class Daemon:
    """Runs every mailbox's sync on its interval, plus IDLE and the alert scan, until stopped."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        stop: threading.Event,
        now_fn: Callable[[], datetime] = utcnow,
        with_alerts: bool = True,
        credentials: MailboxCredentials | None = None,
        reload_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.stop = stop
        self.now_fn = now_fn
        self.with_alerts = with_alerts
        self.box = secret_box(settings.secrets)
        self.credentials = credentials or MailboxCredentials(
            sessions, box=self.box, providers=settings.oauth, now_fn=now_fn
        )
        self.reload_seconds = reload_seconds
        workers = max(MIN_WORKERS, len(settings.mailboxes) + 2)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self.team = Team.of(settings.team, settings.mailboxes)
        # shared by every mailbox's polls: parser processes start with the first body to parse
        self.parser = ParserPool(settings.matching)
        self._running: dict[str, _RunningMailbox] = {}
        self._reload_lock = threading.Lock()
        # the mailboxes there are (last reload), by name; the leases pick this daemon's share of them
        self._wanted: dict[str, tuple[MailboxSettings, datetime | None]] = {}
        self.webhooks = WebhookSender(sessions, settings.api, self.box, now_fn=now_fn)
        self.leases = open_leases(
            engine_of(sessions),
            wanted=lambda: list(self._wanted),
            acquire=self._lease_taken,
            release=self._lease_given_back,
            now_fn=now_fn,
        )

    def claim(self) -> None:
        """Refuse to run when another daemon already runs on this SQLite database (DaemonRunningError)."""
        self.leases.claim()

    def run(self) -> int:
        self.claim()
        self.scheduler.start()
        mailboxes = self.reload_mailboxes()
        self.leases.start()
        if not mailboxes:
            log.warning(
                "no mailboxes in %s or in the panel yet: nothing to sync until one is added",
                self.settings.source,
            )
        self.scheduler.add_job(
            self.reload_mailboxes,
            IntervalTrigger(seconds=self._reload_interval(mailboxes), timezone=UTC),
            id="reload-mailboxes",
            name="reload the mailbox list",
        )
        self.scheduler.add_job(
            self.relink,
            IntervalTrigger(seconds=self._reload_interval(mailboxes), timezone=UTC),
            id="relink",
            name="link earlier mail",
        )
        # webhook delivery: its own executor and its own HTTP threads, so slow receivers never slow a sync
        self.scheduler.add_executor(ThreadPoolExecutor(1), WEBHOOK_EXECUTOR)
        self.scheduler.add_job(
            self.webhooks.run_until_idle,
            IntervalTrigger(seconds=WEBHOOK_POLL_SECONDS, timezone=UTC),
            args=[self.stop],
            id="webhooks",
            name="deliver webhooks",
            executor=WEBHOOK_EXECUTOR,
        )
        if self.with_alerts and self.settings.alerts.enabled:
            from daemon.alerts import schedule_alerts

            schedule_alerts(self.scheduler, self.settings, self.sessions, self.now_fn)
        log.info("daemon started: %d mailbox(es)", len(mailboxes))
        self.stop.wait()
        log.info("stopping: finishing the current batches")
        with self._reload_lock:  # a reload that comes after this sees `stop` and starts nothing
            running = list(self._running.values())
            for mailbox in running:
                mailbox.stop.set()
                if mailbox.idle is not None:
                    mailbox.idle.abort()
        # hands every mailbox over (each commits its batch first) and tells the others this daemon stopped
        self.leases.close()
        # wait=True lets running syncs notice `stop` between batches, commit and return
        self.scheduler.shutdown(wait=True)
        for mailbox in running:
            mailbox.connections.close()
        self.parser.close()
        self.webhooks.close()
        for mailbox in running:
            if mailbox.watcher is not None:
                mailbox.watcher.join(timeout=1.0)
        log.info("daemon stopped")
        return 0

    def _reload_interval(self, mailboxes: Sequence[MailboxSettings]) -> float:
        if self.reload_seconds is not None:
            return self.reload_seconds
        return max(1.0, min([RELOAD_SECONDS, *(m.poll_seconds for m in mailboxes)]))

    # -- the mailbox list ---------------------------------------------------------------------------------

    def reload_mailboxes(self) -> tuple[MailboxSettings, ...]:
        """Read the effective mailbox list and start, restart or stop mailboxes to match it.

        A database or key problem leaves the running mailboxes as they are (logged; tried again next time).
        """
        try:
            with self.sessions() as session:
                wanted = effective_mailboxes(session, self.settings.mailboxes, box=self.box)
                versions = grant_versions(session)
        except Exception as exc:  # the database is down, or a stored password cannot be read
            log.error("cannot read the mailbox list, keeping the running one: %s", exc)
            return tuple(r.mailbox for r in self._running.values())
        with self._reload_lock:
            if self.stop.is_set():
                return wanted
            self.team = Team.of(self.settings.team, wanted)
            names = {m.name for m in wanted}
            self._wanted = {m.name: (m, versions.get(m.name)) for m in wanted}
            for name in [n for n in self._running if n not in names]:
                log.info("%s: removed or paused, no longer synced", name)
                self.stop_mailbox(name)
            for mailbox in wanted:
                running = self._running.get(mailbox.name)
                version = versions.get(mailbox.name)
                if running is None or (running.mailbox, running.grant_version) == (mailbox, version):
                    continue  # a new mailbox starts when the leases give it to this daemon
                log.info("%s: settings or sign-in changed, restarting its sync", mailbox.name)
                self.stop_mailbox(mailbox.name)
                self.start_mailbox(mailbox, grant_version=version)
        return wanted

    # -- leases (daemon.leases calls these) ---------------------------------------------------------------

    def _lease_taken(self, name: str) -> None:
        with self._reload_lock:
            if self.stop.is_set() or name not in self._wanted:
                raise LookupError(f"{name}: not to be synced now")
            if name not in self._running:
                mailbox, version = self._wanted[name]
                log.info("%s: syncing this mailbox from this daemon", name)
                self.start_mailbox(mailbox, grant_version=version)

    def _lease_given_back(self, name: str, at_once: bool) -> None:
        running = self._running.get(name)
        if running is None:
            return
        running.stop.set()
        if running.idle is not None:
            running.idle.abort()  # IDLE has nothing unfinished: drop it now, whatever the reason
        if at_once:
            log.warning("%s: lease lost, dropping its IMAP sessions", name)
        with self._reload_lock:
            if self._running.get(name) is running:
                self.stop_mailbox(name)
        if running.watcher is not None:
            running.watcher.join(timeout=30)

    def start_mailbox(self, mailbox: MailboxSettings, *, grant_version: datetime | None = None) -> None:
        """Schedule the mailbox's poll (first run now) and its IDLE watcher."""
        connections = MailboxConnections(mailbox, target=self.credentials.imap_target(mailbox))
        running = _RunningMailbox(mailbox, connections, grant_version)
        self._running[mailbox.name] = running
        self.scheduler.add_job(
            self.poll,
            IntervalTrigger(seconds=mailbox.poll_seconds, timezone=UTC),
            args=[running],
            id=self._job_id(mailbox.name),
            name=f"sync {mailbox.name}",
            next_run_time=datetime.now(UTC),
            replace_existing=True,
        )
        if mailbox.idle:
            running.watcher = threading.Thread(
                target=self.watch_idle, args=[running], name=f"idle-{mailbox.name}", daemon=True
            )
            running.watcher.start()

    def stop_mailbox(self, name: str) -> None:
        """Unschedule the mailbox; a poll in progress finishes its batch and commits first."""
        running = self._running.pop(name, None)
        if running is None:
            return
        running.stop.set()
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(self._job_id(name))
        with running.lock:
            running.connections.close()

    def running_mailboxes(self) -> dict[str, MailboxSettings]:
        """The mailboxes being synced now, by name, with the settings they run with."""
        return {name: running.mailbox for name, running in self._running.items()}

    @staticmethod
    def _job_id(name: str) -> str:
        return f"sync:{name}"

    # -- polling ------------------------------------------------------------------------------------------

    def poll(self, running: _RunningMailbox) -> SyncResult | None:
        mailbox = running.mailbox
        with running.lock:
            if self.stop.is_set() or running.stop.is_set():
                return None
            waiting_until = self._backoff_until(mailbox)
            if waiting_until is not None:
                log.debug("%s: backing off until %s", mailbox.name, waiting_until.isoformat())
                return None
            result = sync_mailbox(
                mailbox, self.sessions, matching=self.settings.matching, team=self.team,
                now_fn=self.now_fn, stop=running.stop, connections=running.connections, parser=self.parser,
            )  # fmt: skip
        if result.error:
            log.warning(result.summary())
        else:
            log.info(result.summary())
            if result.new:
                self._record_pass(result)
        return result

    def relink(self) -> RelinkResult | None:
        """Earlier mail of the contacts, addresses and domains added since the last look (daemon.relink),
        for every mailbox (not only those this daemon syncs), in one daemon at a time (a singleton job; two
        at once would still file each email once, but fetch it twice)."""
        if self.stop.is_set():
            return None
        with singleton(self.sessions, "relink") as mine:
            if not mine:
                return None
            try:
                with self.sessions() as session:
                    mailboxes = effective_mailboxes(session, self.settings.mailboxes, box=self.box)
            except Exception as exc:  # the database is down, or a stored password cannot be read
                log.warning("earlier mail: cannot read the mailbox list: %s", exc)
                return None
            credentials = self.credentials

            def sign_in(mailbox: MailboxSettings) -> Callable[[ImapTarget], ImapSession]:
                return lambda _target: ImapSession(credentials.imap_target(mailbox))

            result = relink_history(
                mailboxes, self.sessions, matching=self.settings.matching, team=self.team, parser=self.parser,
                now_fn=self.now_fn, stop=self.stop, imap_factory=sign_in,
            )  # fmt: skip
            try:
                prune(self.sessions, matching=self.settings.matching, now=self.now_fn())
            except SQLAlchemyError as exc:
                log.warning("cannot prune the index of earlier mail: %s", exc)
        if result.errors:
            log.warning("earlier mail: %s", result.summary())
        return result

    def _record_pass(self, result: SyncResult) -> None:
        """How long a pass that fetched mail took, for /metrics and status (best effort)."""
        try:
            with transaction(self.sessions) as session:
                record_pass(session, result.mailbox, seconds=result.seconds, messages=result.new)
        except SQLAlchemyError as exc:
            log.debug("%s: cannot record the pass: %s", result.mailbox, exc)

    def _backoff_until(self, mailbox: MailboxSettings) -> datetime | None:
        with self.sessions() as session:
            next_attempt = session.scalar(
                select(MailboxStatus.next_attempt_at).where(MailboxStatus.mailbox == mailbox.name)
            )
        if next_attempt is not None and next_attempt > self.now_fn():
            return next_attempt
        return None

    def wake(self, name: str) -> None:
        """Run the mailbox's sync now (new mail was signalled), unless it is backing off."""
        job = self.scheduler.get_job(self._job_id(name))
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def watch_idle(self, running: _RunningMailbox) -> None:
        """Hold an IDLE on INBOX and wake the poll job on new mail; reconnect after errors."""
        mailbox, stop = running.mailbox, running.stop
        failures = 0
        while not stop.is_set():
            try:
                with ImapSession(running.connections.target) as imap:
                    if not imap.supports_idle:
                        log.info(
                            "%s: server has no IDLE, polling every %d s", mailbox.name, mailbox.poll_seconds
                        )
                        return
                    imap.select_readonly("INBOX")
                    failures = 0
                    renew_at = datetime.now(UTC) + timedelta(seconds=IDLE_RENEW_SECONDS)
                    running.idle = imap
                    self._record_idle(mailbox.name, up=True)
                    try:
                        while not stop.is_set() and datetime.now(UTC) < renew_at:
                            # short IDLE rounds keep shutdown prompt; each round ends with DONE
                            if imap.idle_wait(timeout=5.0):
                                log.debug("%s: new mail signalled", mailbox.name)
                                self.wake(mailbox.name)
                    finally:
                        running.idle = None
                        self._record_idle(mailbox.name, up=False)
            except ImapAuthError:
                return  # the poll job reports and backs off on credentials; IDLE would only hammer the server
            except ImapError as exc:
                failures += 1
                log.debug("%s: IDLE connection lost (%s); retrying", mailbox.name, exc)
                stop.wait(min(IDLE_RETRY_SECONDS * failures, 600))
            except Exception:
                failures += 1
                log.exception("%s: IDLE watcher failed; retrying", mailbox.name)
                stop.wait(min(IDLE_RETRY_SECONDS * failures, 600))

    def _record_idle(self, name: str, *, up: bool) -> None:
        """Tell status and /metrics whether this mailbox's IDLE is up (best effort: never stops IDLE)."""
        daemon_id = self.leases.daemon_id
        if daemon_id is None:
            return
        try:
            with transaction(self.sessions) as session:
                record_idle(session, name, daemon_id if up else None, now=self.now_fn())
        except SQLAlchemyError as exc:
            log.debug("%s: cannot record the IDLE state: %s", name, exc)
