"""The alert scan: rules -> recorded notifications -> one digest email per owner; its schedule.

This module owns the scan's lock and the digest's wording; the rules and the exactly-once bookkeeping live in
models.rules and models.notifications, and SMTP (building the message, its headers, the connection) in
daemon.mailer.

One scan:
1. takes the scan lock, the "alerts" singleton job of daemon.leases (PostgreSQL: advisory locks; SQLite: an
   exclusive `flock` on a file beside the database file): of several daemons only the one holding the job's
   lease scans, and only one process scans at a time; another returns "skipped: another scan is running";
2. decides: runs the rules and records each alert with its idempotency key in one transaction
   (insert-or-ignore on the unique key, so even without the lock nothing is decided twice);
3. sends: per owner, reads the unsent notifications, sends one digest (plain text + HTML), then marks them
   sent in a short transaction. Each owner's digest is its own attempt: one that fails (a bad address, a
   refused recipient, a name that cannot be encoded, a dropped connection) marks that owner's notifications
   with `last_error` and leaves them unsent for the next run (or the retry job every 15 minutes), and the
   other owners' digests still go out. A crash between the SMTP server accepting a digest and the mark-sent
   commit can at worst send that digest once more.

With no `[smtp] host` the alerts live in the panel only: the scan decides and records them, sends nothing
and reports that as a success.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from daemon.credentials import MailboxCredentials
from daemon.imap import TokenSource
from daemon.leases import singleton
from daemon.mailer import Letter, Mailer, one_line
from models.db import engine_of, transaction
from models.mailboxes import effective_mailboxes
from models.notifications import (
    KIND_OVERDUE_TASK,
    KIND_RECONNECT_NEEDED,
    KIND_STALLED_DEAL,
    KIND_WAITING_LEAD,
    AlertPolicy,
    PendingNotification,
    Recipient,
    claim_unsent,
    decide_notifications,
    mark_failed,
    mark_sent,
    parse_stamp,
    recipients_with_unsent,
)
from models.secrets import secret_box
from settings import Settings

log = logging.getLogger("threadline.alerts")

RETRY_EVERY = timedelta(minutes=15)
SKIPPED_BUSY = "another scan is running"
PANEL_ONLY = "no email sent ([smtp] host is not configured: alerts are shown in the panel only)"


def deal_url(base_url: str, deal_id: int) -> str:
    """The admin panel's page for a deal (the one route the digest links to)."""
    return f"{base_url.rstrip('/')}/admin/records/deal/{deal_id}"


def mailboxes_url(base_url: str) -> str:
    """The panel's mailbox page, where a mailbox is connected again."""
    return f"{base_url.rstrip('/')}/admin/mailboxes/"


def contact_url(base_url: str, contact_id: int) -> str:
    return f"{base_url.rstrip('/')}/admin/records/contact/{contact_id}"


@dataclass
class ScanResult:
    """What one scan (or retry) did; `ok` is False when some digest could not be sent."""

    skipped: str | None = None
    emailed: bool = True
    """False when there is no [smtp] host: the alerts are recorded for the panel and nothing is sent."""
    decided: int = 0
    tasks_created: int = 0
    digests_sent: int = 0
    digests_failed: int = 0
    notifications_sent: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.digests_failed == 0

    def summary(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        parts = [f"{self.decided} notifications decided"]
        if self.emailed:
            parts.append(f"{self.digests_sent} digests sent ({self.notifications_sent} notifications)")
            parts.append(f"{self.digests_failed} digests failed")
        else:
            parts.append(f"recorded in the panel, {PANEL_ONLY}")
        if self.tasks_created:
            parts.append(f"{self.tasks_created} follow-up tasks created")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# ---- the scan lock ----------------------------------------------------------------------------------------


def scan_lock(engine: Engine) -> contextlib.AbstractContextManager[bool]:
    """Try to become the one process scanning; yields whether this process got it (never waits).

    The alert scan is a singleton job (daemon.leases): in a daemon it runs in the one daemon holding the
    "alerts" lease, and a scan run by hand never overlaps a scheduled one.
    """
    return singleton(engine, "alerts")


# ---- the scan ---------------------------------------------------------------------------------------------


def run_scan(
    settings: Settings, sessions: sessionmaker[Session], *, now: datetime, send: bool = True
) -> ScanResult:
    """One alert scan at `now`: decide new notifications, then send each owner's unsent ones as one digest."""
    if not settings.alerts.enabled:
        return ScanResult(skipped="alerts are disabled ([alerts] enabled = false)")
    with scan_lock(engine_of(sessions)) as acquired:
        if not acquired:
            log.info("alert scan skipped: %s", SKIPPED_BUSY)
            return ScanResult(skipped=SKIPPED_BUSY)
        result = ScanResult()
        with transaction(sessions) as session:
            decided = decide_notifications(session, now=now, policy=AlertPolicy.of(settings.alerts))
        result.decided, result.tasks_created = len(decided.decided), decided.tasks_created
        if send:
            _send_pending(settings, sessions, now=now, result=result)
    log.info("alert scan: %s", result.summary())
    return result


def retry_unsent(settings: Settings, sessions: sessionmaker[Session], *, now: datetime) -> ScanResult:
    """Send notifications left unsent by an earlier failure, deciding nothing new."""
    if not settings.alerts.enabled:
        return ScanResult(skipped="alerts are disabled ([alerts] enabled = false)")
    with scan_lock(engine_of(sessions)) as acquired:
        if not acquired:
            return ScanResult(skipped=SKIPPED_BUSY)
        result = ScanResult()
        _send_pending(settings, sessions, now=now, result=result)
    if result.digests_sent or result.digests_failed:
        log.info("alert retry: %s", result.summary())
    return result


def smtp_sign_in(settings: Settings, sessions: sessionmaker[Session]) -> tuple[TokenSource | None, str]:
    """With [smtp] oauth_mailbox: that mailbox's OAuth token source and its user name (unless [smtp]
    username says otherwise), for SASL XOAUTH2. (None, "") otherwise, or when it is not an OAuth mailbox (the
    mailer then says so in every failed digest)."""
    name = settings.smtp.oauth_mailbox
    if not name:
        return None, ""
    box = secret_box(settings.secrets)
    try:
        with sessions() as session:
            mailboxes = effective_mailboxes(session, settings.mailboxes, box=box, include_paused=True)
    except Exception as exc:  # no key for the stored secrets, database gone: the digests wait
        log.error("cannot read mailbox %r for the digests' SMTP sign-in: %s", name, exc)
        return None, ""
    mailbox = next((m for m in mailboxes if m.name == name and m.uses_oauth), None)
    if mailbox is None:
        return None, ""
    credentials = MailboxCredentials(sessions, box=box, providers=settings.oauth)
    return credentials.token_source(mailbox), settings.smtp.username or mailbox.username


def _send_pending(
    settings: Settings, sessions: sessionmaker[Session], *, now: datetime, result: ScanResult
) -> None:
    if not settings.smtp.configured:
        result.emailed = False
        return
    with transaction(sessions, write=False) as session:
        recipients = recipients_with_unsent(session)
    if not recipients:
        return
    tokens, username = smtp_sign_in(settings, sessions)
    with Mailer(settings.smtp, tokens=tokens, oauth_username=username) as mailer:
        for recipient in recipients:
            with transaction(sessions, write=False) as session:
                pending = claim_unsent(session, recipient.user_id)
            if not pending:
                continue
            ids = [p.id for p in pending]
            try:
                error = mailer.send(build_digest(settings, recipient, pending, now=now), now=now).error
            except Exception as exc:  # one owner's digest, whatever went wrong, never stops the others
                log.exception("alert digest for %s could not be built", recipient.email)
                error = f"not sent: the digest could not be built ({type(exc).__name__})"
            if error is None:
                with transaction(sessions) as session:
                    result.notifications_sent += mark_sent(session, ids, now=now)
                result.digests_sent += 1
                continue
            with transaction(sessions) as session:
                mark_failed(session, ids, error=error)
            result.digests_failed += 1
            if error not in result.errors:
                result.errors.append(error)
            log.warning("alert digest for %s not sent: %s", recipient.email, error)


# ---- the digest -------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('x') else 's'}"


def _latest_per_subject(pending: Sequence[PendingNotification]) -> list[PendingNotification]:
    """One line per deal/task/lead even if an earlier failure left several reminders about it unsent."""
    latest: dict[tuple[str, int | str | None], PendingNotification] = {}
    for item in pending:
        latest[item.subject_key] = item
    return sorted(latest.values(), key=lambda p: (p.created_at, p.id))


def _parse_time(value: object) -> datetime | None:
    try:
        return parse_stamp(value)
    except (ValueError, OverflowError):
        return None


def _money(detail: dict[str, Any]) -> str:
    try:
        amount = Decimal(int(detail.get("value_cents") or 0)) / 100
    except (ArithmeticError, TypeError, ValueError):
        amount = Decimal(0)
    return f"{detail.get('currency') or ''} {amount:,.2f}".strip()


@dataclass(frozen=True)
class DigestLine:
    """One alert in a digest, already worded; the text and HTML parts are two renderings of these."""

    kind: str
    title: str
    facts: tuple[str, ...]
    url: str | None


def digest_lines(
    pending: Sequence[PendingNotification], *, base_url: str, now: datetime, timezone: str
) -> list[DigestLine]:
    tz = zoneinfo.ZoneInfo(timezone)

    def day(value: datetime | None) -> str:
        return value.astimezone(tz).strftime("%Y-%m-%d") if value else "never"

    def minute(value: datetime | None) -> str:
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") if value else "?"

    lines = []
    for item in _latest_per_subject(pending):
        d = item.detail
        if item.kind == KIND_STALLED_DEAL:
            # "stalled_since" is the key notifications recorded before it was named for what it holds
            since = _parse_time(d.get("last_touch_at") or d.get("stalled_since"))
            days = (now - since).days if since else 0
            lines.append(
                DigestLine(
                    kind=item.kind,
                    title=str(d.get("deal_title") or item.title),
                    facts=(
                        f"stage {d.get('stage')}",
                        f"stalled {_plural(days, 'day')}",
                        f"last activity {day(_parse_time(d.get('last_activity_at')))}",
                        f"value {_money(d)}",
                    ),
                    url=deal_url(base_url, item.deal_id) if item.deal_id else None,
                )
            )
        elif item.kind == KIND_OVERDUE_TASK:
            due = _parse_time(d.get("due_at"))
            facts = [f"due {minute(due)}"]
            if due:
                facts.append(
                    f"{_plural((now - due).days, 'day')} overdue"
                    if now - due >= timedelta(days=1)
                    else "overdue"
                )
            if d.get("deal_title"):
                facts.append(f"deal {d['deal_title']}")
            if d.get("contact_name"):
                facts.append(f"contact {d['contact_name']}")
            url = deal_url(base_url, item.deal_id) if item.deal_id else None
            if url is None and item.contact_id:
                url = contact_url(base_url, item.contact_id)
            lines.append(
                DigestLine(
                    kind=item.kind, title=str(d.get("task_title") or item.title), facts=tuple(facts), url=url
                )
            )
        elif item.kind == KIND_WAITING_LEAD:
            created = _parse_time(d.get("created_at"))
            hours = int((now - created).total_seconds() // 3600) if created else 0
            name = str(d.get("contact_name") or item.title)
            title = f"{name} <{d['email']}>" if d.get("email") else name
            lines.append(
                DigestLine(
                    kind=item.kind,
                    title=title,
                    facts=(f"created {minute(created)}", f"{_plural(hours, 'hour')} without a first contact"),
                    url=contact_url(base_url, item.contact_id) if item.contact_id else None,
                )
            )
        elif item.kind == KIND_RECONNECT_NEEDED:
            lines.append(
                DigestLine(
                    kind=item.kind,
                    title=f"Mailbox {d.get('mailbox')}",
                    facts=(
                        f"sign-in refused since {minute(_parse_time(d.get('since')))}",
                        f"reason: {d.get('reason') or 'refused'}",
                        "connect it again in Threadline",
                    ),
                    url=mailboxes_url(base_url),
                )
            )
    return lines


# Alerts listed per section of one digest; the subject still counts them all.
DIGEST_SECTION_LIMIT = 25

_SECTIONS = (
    (KIND_RECONNECT_NEEDED, "Mailboxes to reconnect", "mailbox"),
    (KIND_STALLED_DEAL, "Stalled deals", "stalled deal"),
    (KIND_OVERDUE_TASK, "Overdue tasks", "overdue task"),
    (KIND_WAITING_LEAD, "Waiting leads", "waiting lead"),
)


def build_digest(
    settings: Settings, recipient: Recipient, pending: Sequence[PendingNotification], *, now: datetime
) -> Letter:
    """The owner's digest: subject counting the alerts, plain-text and HTML parts with links to the deals."""
    lines = digest_lines(pending, base_url=settings.smtp.base_url, now=now, timezone=settings.team.timezone)
    counts = [
        (kind, title, _plural(sum(1 for line in lines if line.kind == kind), noun))
        for kind, title, noun in _SECTIONS
    ]
    present = [(kind, title, count) for kind, title, count in counts if not count.startswith("0 ")]
    summary = ", ".join(count for _, _, count in present)

    name = one_line(recipient.name) or recipient.email
    text_parts = [f"Hello {name},", "", f"Threadline needs your attention on: {summary}.", ""]
    html_parts = [
        '<html><body style="font-family: sans-serif">',
        f"<p>Hello {html.escape(name)},</p>",
        f"<p>Threadline needs your attention on: {html.escape(summary)}.</p>",
    ]
    all_alerts_url = f"{settings.smtp.base_url}/admin/notifications/"
    for kind, title, _count in present:
        text_parts.append(title)
        text_parts.append("-" * len(title))
        html_parts.append(f"<h2>{html.escape(title)}</h2><ul>")
        section = [line for line in lines if line.kind == kind]
        for line in section[:DIGEST_SECTION_LIMIT]:
            text_parts.append(f"* {line.title}: {', '.join(line.facts)}")
            if line.url:
                text_parts.append(f"  {line.url}")
            name = html.escape(line.title)
            if line.url:
                name = f'<a href="{html.escape(line.url, quote=True)}">{name}</a>'
            html_parts.append(f"<li>{name}: {html.escape(', '.join(line.facts))}</li>")
        hidden = len(section) - DIGEST_SECTION_LIMIT
        if hidden > 0:
            # a digest is read, not scrolled: the rest waits in the panel's list
            more = f"and {hidden} more in Threadline"
            text_parts.append(f"* {more}: {all_alerts_url}")
            html_parts.append(f'<li><a href="{html.escape(all_alerts_url, quote=True)}">{more}</a></li>')
        text_parts.append("")
        html_parts.append("</ul>")
    footer = (
        "You get this digest because these records are yours in Threadline. A deal can be muted, and an "
        "admin can turn alerts off for your account."
    )
    text_parts += ["-- ", footer, ""]
    html_parts += [
        f'<hr><p style="color: #666; font-size: small">{html.escape(footer)}</p>',
        "</body></html>",
    ]

    return Letter(
        to_address=recipient.email,
        to_name=recipient.name,
        subject=f"Threadline: {summary}",
        text="\n".join(text_parts),
        html="\n".join(html_parts),
    )


# ---- schedule ---------------------------------------------------------------------------------------------

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _standard_weekdays(field_: str) -> str:
    """Crontab weekday numbers (0 or 7 = Sunday) as names: APScheduler 3 counts 0 as Monday."""
    parts = []
    for part in field_.split(","):
        base, slash, step = part.partition("/")
        bounds = re.fullmatch(r"(\d)(?:-(\d))?", base)
        if bounds is None:
            parts.append(part)
            continue
        first = int(bounds.group(1))
        last = int(bounds.group(2)) if bounds.group(2) else (7 if slash else first)
        if first > 7 or last > 7 or first > last:
            raise ValueError(f"bad day-of-week {part!r}")
        days = range(first, last + 1, int(step) if slash else 1)
        parts.extend(_CRON_DAYS[d] for d in days)
    return ",".join(dict.fromkeys(parts))


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """A trigger from a crontab expression (minute hour day month weekday) in the team's time zone.

    Six fields (a leading seconds field) are accepted too, for tests and for whoever needs that precision.
    """
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected a cron expression with 5 fields (or 6 with seconds), got {expression!r}")
    second, minute, hour, day, month, weekday = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_standard_weekdays(weekday),
        timezone=zoneinfo.ZoneInfo(timezone),
    )


def scheduled_scan(
    settings: Settings, sessions: sessionmaker[Session], now_fn: Callable[[], datetime]
) -> None:
    """The scheduler's job: never raises (a failed run is logged; the next run and the retry job go on)."""
    try:
        run_scan(settings, sessions, now=now_fn())
    except Exception:
        log.exception("alert scan failed")


def scheduled_retry(
    settings: Settings, sessions: sessionmaker[Session], now_fn: Callable[[], datetime]
) -> None:
    try:
        retry_unsent(settings, sessions, now=now_fn())
    except Exception:
        log.exception("alert retry failed")


def schedule_alerts(
    scheduler: Any,
    settings: Settings,
    sessions: sessionmaker[Session],
    now_fn: Callable[[], datetime],
    *,
    retry_every: timedelta = RETRY_EVERY,
) -> None:
    """Add the alert jobs to an APScheduler 3 scheduler: the scan on `[alerts] schedule`, and the retry job.

    coalesce + max_instances=1: a late or overlapping run is one run; misfire_grace_time: a daemon that was
    down at 08:00 and is back within the hour still sends the morning digest.
    """
    if not settings.alerts.enabled:
        log.info("alerts are disabled ([alerts] enabled = false): no alert jobs scheduled")
        return
    args = (settings, sessions, now_fn)
    options: dict[str, Any] = {"coalesce": True, "max_instances": 1, "replace_existing": True}
    scheduler.add_job(
        scheduled_scan,
        cron_trigger(settings.alerts.schedule, settings.team.timezone),
        args=args,
        id="alerts",
        name="alert scan",
        misfire_grace_time=3600,
        **options,
    )
    scheduler.add_job(
        scheduled_retry,
        IntervalTrigger(
            seconds=retry_every.total_seconds(), timezone=zoneinfo.ZoneInfo(settings.team.timezone)
        ),
        args=args,
        id="alerts-retry",
        name="alert retry",
        misfire_grace_time=int(retry_every.total_seconds()),
        **options,
    )
