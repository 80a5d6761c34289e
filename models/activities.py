"""Activities other than email (calls, meetings, notes) and planned ones; logging moves last-activity times.

Email activities are recorded by the sync's own operation in models.email_log; both update the same
`last_activity_at` columns that the stalled-deal rules read.

A planned activity (a `Task` row: a call, meeting, email or to-do with a due date, an optional time and an
assignee) is the rep's next step. Completing one logs it on its records' timelines: a planned call or meeting
as a call or meeting (so it counts as reaching a lead), an email or to-do as a completed task. A deal's next
step is its open planned activity due first (`next_activity_for_deals`, for the deal page and the board).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import DomainError
from models.schema import Activity, ActivityKind, Company, Contact, Deal, PlannedKind, Task, User

MANUAL_KINDS = (ActivityKind.CALL, ActivityKind.MEETING, ActivityKind.NOTE)


def touch(records: Sequence[Deal | Contact | Company | None], when: datetime) -> None:
    """Move records' last activity time forward (never back: an old email imported late is not news)."""
    for record in records:
        if record is not None and (record.last_activity_at is None or record.last_activity_at < when):
            record.last_activity_at = when


def log_activity(
    session: Session,
    *,
    kind: ActivityKind | str,
    occurred_at: datetime,
    now: datetime,
    subject: str = "",
    body: str = "",
    author: User | None = None,
    contacts: Sequence[Contact] = (),
    company: Company | None = None,
    deal: Deal | None = None,
) -> Activity:
    """Log a call, meeting or note on the records it concerns."""
    kind = ActivityKind(kind)
    if kind not in MANUAL_KINDS:
        raise DomainError(f"only {', '.join(k.value for k in MANUAL_KINDS)} can be logged by hand")
    if not (subject.strip() or body.strip()):
        raise DomainError("an activity needs a subject or some notes")
    if company is None and deal is not None:
        company = deal.company
    if company is None:
        company = next((c.company for c in contacts if c.company is not None), None)
    activity = Activity(
        kind=kind,
        occurred_at=occurred_at,
        subject=subject.strip(),
        body=body,
        author=author,
        company=company,
        deal=deal,
        created_at=now,
        snippet=(body.strip() or subject.strip())[:200],
        truncated=False,
        needs_deal_review=False,
    )
    activity.contacts.extend(contacts)
    session.add(activity)
    touch([deal, company, *contacts], occurred_at)
    session.flush()
    return activity


KIND_WORDS = {
    PlannedKind.CALL: "Call",
    PlannedKind.MEETING: "Meeting",
    PlannedKind.EMAIL: "Email",
    PlannedKind.TODO: "To-do",
}
"""People's words for each type of planned activity."""

LOGGED_AS = {PlannedKind.CALL: ActivityKind.CALL, PlannedKind.MEETING: ActivityKind.MEETING}
"""What a completed planned activity becomes on the timeline (the others: a completed task)."""

END_OF_DAY = time(23, 59)


def zone_of(tz: str | zoneinfo.ZoneInfo) -> zoneinfo.ZoneInfo:
    return tz if isinstance(tz, zoneinfo.ZoneInfo) else zoneinfo.ZoneInfo(tz)


def planned_due(
    day: date | None, at: time | None, tz: str | zoneinfo.ZoneInfo
) -> tuple[datetime | None, bool]:
    """When a planned activity on `day` (at `at`, else any time that day, in the team's zone `tz`) becomes
    overdue, in UTC, and whether it has a time: a date without a time is due until the end of that day."""
    if day is None:
        return None, at is not None
    local = datetime.combine(day, at if at is not None else END_OF_DAY, tzinfo=zone_of(tz))
    return local.astimezone(UTC), at is not None


def create_task(
    session: Session,
    *,
    title: str,
    now: datetime,
    due_at: datetime | None = None,
    assignee: User | None = None,
    deal: Deal | None = None,
    contact: Contact | None = None,
    company: Company | None = None,
    notes: str = "",
    kind: PlannedKind | str = PlannedKind.TODO,
    has_due_time: bool = True,
) -> Task:
    """Plan an activity (a task): a call, meeting, email or to-do, on a deal, a contact or a company."""
    if not title.strip():
        raise DomainError("a planned activity needs a subject")
    try:
        kind = PlannedKind(kind)
    except ValueError:
        raise DomainError(f"choose a type: {', '.join(KIND_WORDS.values()).lower()}") from None
    task = Task(
        kind=kind,
        title=title.strip(),
        notes=notes,
        due_at=due_at,
        has_due_time=has_due_time,
        assignee=assignee,
        deal=deal,
        contact=contact,
        company=company,
        created_at=now,
    )
    session.add(task)
    session.flush()
    return task


def complete_task(session: Session, task: Task, *, now: datetime, by: User | None = None) -> Activity | None:
    """Mark a planned activity done and log it on its deal, contact and company (it un-stalls the deal); a
    call or meeting is logged as one. Done twice: the second time changes nothing (None)."""
    if task.done_at is not None:
        return None
    task.done_at = now
    kind = LOGGED_AS.get(task.kind, ActivityKind.TASK)
    company = task.company or (task.deal.company if task.deal else None)
    if company is None and task.contact is not None:
        company = task.contact.company
    subject = {PlannedKind.EMAIL: "Email sent: ", PlannedKind.TODO: "Task done: "}.get(
        task.kind, ""
    ) + task.title
    activity = Activity(
        kind=kind,
        occurred_at=now,
        subject=subject[:998],
        body=task.notes,
        author=by or task.assignee,
        deal=task.deal,
        company=company,
        created_at=now,
        snippet=(task.notes.strip() or task.title)[:200],
        truncated=False,
        needs_deal_review=False,
    )
    if task.contact is not None:
        activity.contacts.append(task.contact)
    session.add(activity)
    touch([task.deal, task.contact, company], now)
    session.flush()
    return activity


# ---- what is planned ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NextActivity:
    """A deal's next step: its open planned activity due first (undated ones after every dated one)."""

    task_id: int
    kind: PlannedKind
    title: str
    due_at: datetime | None
    has_due_time: bool
    assignee_id: int | None

    def state(self, now: datetime, tz: str | zoneinfo.ZoneInfo) -> str:
        """overdue, today or later (Pipedrive's red, green and grey)."""
        return due_state(self.due_at, self.has_due_time, now, tz)


def due_state(due_at: datetime | None, has_due_time: bool, now: datetime, tz: str | zoneinfo.ZoneInfo) -> str:
    """`overdue` (its time, or its whole day, has passed), `today` (due today in the team's zone), `later`."""
    if due_at is None:
        return "later"
    if due_at < now:
        return "overdue"
    zone = zone_of(tz)
    return "today" if due_at.astimezone(zone).date() <= now.astimezone(zone).date() else "later"


def next_activity_for_deals(session: Session, deal_ids: Iterable[int]) -> dict[int, NextActivity]:
    """Each deal's next planned activity (deals with none are absent): one query for a board's worth."""
    ids = sorted(set(deal_ids))
    if not ids:
        return {}
    found: dict[int, NextActivity] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        # dated first, earliest first; then undated, oldest first (ix_tasks_deal_id_done_at_due_at)
        order = func.row_number().over(
            partition_by=Task.deal_id,
            order_by=(Task.due_at.is_(None), Task.due_at, Task.id),
        )
        ranked = (
            select(
                Task.deal_id,
                Task.id,
                Task.kind,
                Task.title,
                Task.due_at,
                Task.has_due_time,
                Task.assignee_id,
                order.label("n"),
            )
            .where(Task.deal_id.in_(chunk), Task.done_at.is_(None))
            .subquery()
        )
        for deal_id, task_id, kind, title, due_at, has_time, assignee_id, _n in session.execute(
            select(ranked).where(ranked.c.n == 1)
        ):
            found[deal_id] = NextActivity(task_id, PlannedKind(kind), title, due_at, has_time, assignee_id)
    return found


@dataclass(frozen=True)
class PlannedItem:
    """One open planned activity as a list shows it, with the record it is about."""

    task_id: int
    kind: PlannedKind
    title: str
    due_at: datetime | None
    has_due_time: bool
    assignee_id: int | None
    assignee_name: str | None
    deal_id: int | None
    deal_title: str | None
    contact_id: int | None
    contact_name: str | None
    company_id: int | None
    company_name: str | None


def open_activities(
    session: Session,
    *,
    due_before: datetime,
    assignee_id: int | None = None,
    limit: int = 200,
) -> list[PlannedItem]:
    """Open planned activities due before `due_before` (overdue ones included), earliest first, each with its
    deal, contact and company names; one assignee's, or everyone's."""
    query = (
        select(
            Task.id,
            Task.kind,
            Task.title,
            Task.due_at,
            Task.has_due_time,
            Task.assignee_id,
            User.name,
            Task.deal_id,
            Deal.title,
            Task.contact_id,
            Contact.name,
            Task.company_id,
            Company.name,
        )
        .outerjoin(User, User.id == Task.assignee_id)
        .outerjoin(Deal, Deal.id == Task.deal_id)
        .outerjoin(Contact, Contact.id == Task.contact_id)
        .outerjoin(Company, Company.id == Task.company_id)
        .where(Task.done_at.is_(None), Task.due_at < due_before)
        .order_by(Task.due_at, Task.id)
        .limit(limit)
    )
    if assignee_id is not None:
        query = query.where(Task.assignee_id == assignee_id)
    return [PlannedItem(task_id, PlannedKind(kind), *rest) for task_id, kind, *rest in session.execute(query)]


def end_of_local_day(now: datetime, tz: str | zoneinfo.ZoneInfo, days: int = 0) -> datetime:
    """The end of today (plus `days`) in the team's zone, in UTC: the bound of "due today"."""
    zone = zone_of(tz)
    local = now.astimezone(zone).date() + timedelta(days=days + 1)
    return datetime.combine(local, time(0), tzinfo=zone).astimezone(UTC)
