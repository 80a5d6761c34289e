"""`threadline status`: every mailbox's sync health and the alert digests at a glance, for people and checks.

The numbers come from `models.health` (the same snapshot the panel's `/metrics` serves), so the table, the
JSON and Prometheus never disagree. Exit status 1 when a mailbox is failing, stale or has never synced, so a
cron job or a monitoring check can run it as is.
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from models.health import HealthSnapshot, MailboxHealth, MailboxState, expected_mailboxes, take_snapshot
from settings import Settings

_STYLES = {
    MailboxState.OK: "green",
    MailboxState.FAILING: "bold red",
    MailboxState.STALE: "bold red",
    MailboxState.NEVER: "yellow",
    MailboxState.PAUSED: "dim",
    MailboxState.UNCONFIGURED: "dim",
}


def read_snapshot(sessions: sessionmaker[Session], settings: Settings, *, now: datetime) -> HealthSnapshot:
    with sessions() as session:
        return take_snapshot(session, expected_mailboxes(settings.mailboxes), now=now)


def print_status(snapshot: HealthSnapshot, settings: Settings, out: TextIO, *, as_json: bool) -> bool:
    """Print the table (or JSON); returns whether every configured mailbox is healthy."""
    if as_json:
        out.write(json.dumps(as_dict(snapshot), sort_keys=True) + "\n")
    else:
        _print_table(snapshot, zoneinfo.ZoneInfo(settings.team.timezone), out)
    return not snapshot.problems


def as_dict(snapshot: HealthSnapshot) -> dict[str, Any]:
    now = snapshot.taken_at
    return {
        "ok": not snapshot.problems,
        "taken_at": _iso(now),
        "mailboxes": [
            {
                "name": m.name,
                "state": m.state.value,
                "last_success_at": _iso(m.last_success_at),
                "seconds_since_success": m.seconds_since_success(now),
                "last_attempt_at": _iso(m.last_attempt_at),
                "messages_seen": m.messages_seen,
                "messages_logged": m.messages_logged,
                "messages_waiting": m.messages_waiting,
                "consecutive_failures": m.consecutive_failures,
                "last_error": m.last_error,
                "quarantined": m.quarantined,
                "next_attempt_at": _iso(m.next_attempt_at) if m.backoff_seconds(now) else None,
                "last_pass_seconds": m.last_pass_seconds,
                "last_pass_messages": m.last_pass_messages,
                "holder": m.holder.label if m.holder is not None else None,
                "idle_connected": m.idle_connected,
            }
            for m in snapshot.mailboxes
        ],
        "daemons": [
            {
                "daemon": d.label,
                "host": d.host,
                "pid": d.pid,
                "alive": d.alive,
                "started_at": _iso(d.started_at),
                "heartbeat_at": _iso(d.heartbeat_at),
                "stopped_at": _iso(d.stopped_at),
                "mailboxes": d.mailboxes_held,
                "jobs": list(d.jobs),
            }
            for d in snapshot.daemons
        ],
        "alerts": {
            "kinds": {
                k.kind: {"decided": k.decided, "sent": k.sent, "unsent": k.unsent, "failing": k.failing}
                for k in snapshot.alerts.kinds
            },
            "digests_sent": snapshot.alerts.digests_sent,
            "recipients_failing": snapshot.alerts.recipients_failing,
        },
        "emails_needing_review": snapshot.emails_needing_review,
    }


def summary(snapshot: HealthSnapshot) -> str:
    mailboxes = [m for m in snapshot.mailboxes if m.state is not MailboxState.UNCONFIGURED]
    counts = {state: sum(1 for m in mailboxes if m.state is state) for state in MailboxState}
    states = ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)
    parts = [f"{_plural(len(mailboxes), 'mailbox', 'mailboxes')}" + (f": {states}" if states else "")]
    quarantined = sum(m.quarantined for m in snapshot.mailboxes)
    parts.append(f"{quarantined} in quarantine")
    parts.append(f"{_plural(snapshot.emails_needing_review, 'email needs', 'emails need')} a deal")
    alerts = snapshot.alerts
    unsent = sum(k.unsent for k in alerts.kinds)
    line = f"alerts: {_plural(alerts.digests_sent, 'digest', 'digests')} sent, {unsent} waiting"
    if alerts.recipients_failing:
        line += f", {_plural(alerts.recipients_failing, 'owner', 'owners')} failing"
    parts.append(line)
    return "; ".join(parts)


def _print_table(snapshot: HealthSnapshot, zone: zoneinfo.ZoneInfo, out: TextIO) -> None:
    now = snapshot.taken_at
    console = Console(file=out, highlight=False, width=None if out.isatty() else 240)
    if snapshot.mailboxes:
        table = Table(title=None, show_edge=False, pad_edge=False)
        for column, justify in (
            ("mailbox", "left"),
            ("state", "left"),
            ("last sync", "left"),
            ("age", "right"),
            ("logged", "right"),
            ("waiting", "right"),
            ("errors", "left"),
            ("quarantine", "right"),
            ("next attempt", "left"),
            ("holder", "left"),
            ("IDLE", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for m in snapshot.mailboxes:
            table.add_row(
                m.name,
                f"[{_STYLES[m.state]}]{m.state.value}[/]",
                _local(m.last_success_at, zone),
                _age(m.seconds_since_success(now)),
                f"{m.messages_logged:,}",
                f"{m.messages_waiting:,}",
                _errors(m),
                str(m.quarantined) if m.quarantined else "",
                _next_attempt(m, now, zone),
                _holder(m),
                _idle(m),
            )
        console.print(table)
    else:
        console.print("no mailboxes configured or synced yet")
    _print_daemons(snapshot, zone, console)
    console.print(summary(snapshot), soft_wrap=True)


def _holder(m: MailboxHealth) -> str:
    if m.state in (MailboxState.PAUSED, MailboxState.UNCONFIGURED):
        return ""
    return m.holder.label if m.holder is not None else "[bold red]no daemon[/]"


def _idle(m: MailboxHealth) -> str:
    if m.holder is None:
        return ""
    return "up" if m.idle_connected else "down"


def _print_daemons(snapshot: HealthSnapshot, zone: zoneinfo.ZoneInfo, console: Console) -> None:
    """One row per daemon: alive ones, then the last few stopped or dead ones."""
    alive = [d for d in snapshot.daemons if d.alive]
    gone = [d for d in snapshot.daemons if not d.alive][:5]
    if not alive and not gone:
        console.print("no daemon has run against this database yet")
        return
    now = snapshot.taken_at
    table = Table(title=None, show_edge=False, pad_edge=False)
    for column, justify in (
        ("daemon", "left"),
        ("state", "left"),
        ("started", "left"),
        ("heartbeat", "right"),
        ("mailboxes", "right"),
        ("jobs", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for d in [*alive, *gone]:
        state = "[green]alive[/]" if d.alive else ("stopped" if d.stopped_at else "[bold red]dead[/]")
        table.add_row(
            d.label,
            state,
            _local(d.started_at, zone),
            f"{_age(d.seconds_since_heartbeat(now))} ago",
            str(d.mailboxes_held) if d.alive else "",
            ", ".join(d.jobs),
        )
    console.print(table)


def _errors(m: MailboxHealth) -> str:
    if not m.consecutive_failures:
        return ""
    reason = (m.last_error or "").splitlines()[0] if m.last_error else ""
    if len(reason) > 80:
        reason = reason[:79] + "…"
    return f"{_plural(m.consecutive_failures, 'failure', 'failures')}: {reason}"


def _next_attempt(m: MailboxHealth, now: datetime, zone: zoneinfo.ZoneInfo) -> str:
    wait = m.backoff_seconds(now)
    if not wait:
        return ""
    return f"{_local(m.next_attempt_at, zone)} (in {_age(wait)})"


def _local(value: datetime | None, zone: zoneinfo.ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value is not None else "never"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds // 86400)} d"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"
