"""Activities other than email (calls, meetings, notes) and tasks; logging them moves last-activity times.

Email activities are recorded by the sync's own operation in models.email_log; both update the same
`last_activity_at` columns that the stalled-deal rules read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from models.errors import DomainError
from models.schema import Activity, ActivityKind, Company, Contact, Deal, Task, User

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


def create_task(
    session: Session,
    *,
    title: str,
    now: datetime,
    due_at: datetime | None = None,
    assignee: User | None = None,
    deal: Deal | None = None,
    contact: Contact | None = None,
    notes: str = "",
) -> Task:
    if not title.strip():
        raise DomainError("a task needs a title")
    task = Task(
        title=title.strip(),
        notes=notes,
        due_at=due_at,
        assignee=assignee,
        deal=deal,
        contact=contact,
        created_at=now,
    )
    session.add(task)
    session.flush()
    return task


def complete_task(session: Session, task: Task, *, now: datetime, by: User | None = None) -> Activity | None:
    """Mark a task done; a completed task is activity on its deal and contact (it un-stalls the deal)."""
    if task.done_at is not None:
        return None
    task.done_at = now
    activity = Activity(
        kind=ActivityKind.TASK,
        occurred_at=now,
        subject=f"Task done: {task.title}",
        body=task.notes,
        author=by or task.assignee,
        deal=task.deal,
        company=task.deal.company if task.deal else None,
        created_at=now,
        snippet=task.title[:200],
        truncated=False,
        needs_deal_review=False,
    )
    if task.contact is not None:
        activity.contacts.append(task.contact)
    session.add(activity)
    touch([task.deal, task.contact], now)
    session.flush()
    return activity
