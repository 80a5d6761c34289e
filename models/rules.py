"""The alert rules as domain queries: stalled deals, overdue tasks and waiting leads.

Each rule is a SELECT builder (`stalled_select`, `overdue_select`, `waiting_leads_select`: the joins and the
WHERE clause, with the columns chosen by the caller) plus a function returning plain dataclasses. The alert
decision (models.notifications) inserts straight from the same builders, so what the rules list and what gets
alerted cannot drift apart. With `alertable_only=True` a rule leaves out what must not be alerted: records
without an owner/assignee, owners who opted out (`User.alerts_enabled`) or are deactivated, muted deals
(`Deal.alerts_muted`) and deals in excluded stages (`Stage.alerts_excluded`).

Stalled: open and `now - max(stage_entered_at, last_activity_at) >= stall days` (the stage's `stall_days`,
else the default). `Deal.last_activity_at` is moved forward by every activity (email logged by the sync,
call, meeting, note, completed task), so the rule reads only the deals table. `stalled_condition` here is the
same rule as models.reports.stalled_condition (the dashboard's; a test checks they agree) written for speed:
one branch per open stage comparing the raw columns with a constant cutoff, instead of date arithmetic on
every row, which costs ~1.3 s on SQLite over 100,000 open deals.

Waiting lead: the dashboard's rule (models.reports.uncontacted_condition) with the [alerts] numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, false, or_, select
from sqlalchemy.orm import Session

from models.reports import uncontacted_condition
from models.schema import Contact, ContactEmail, Deal, DealStatus, Stage, StageKind, Task, User


@dataclass(frozen=True)
class StalledDeal:
    deal_id: int
    title: str
    owner_id: int | None
    stage: str
    stall_days: int
    stalled_since: datetime
    last_activity_at: datetime | None
    value: Decimal
    currency: str
    days_stalled: int


@dataclass(frozen=True)
class OverdueTask:
    task_id: int
    title: str
    assignee_id: int | None
    due_at: datetime
    deal_id: int | None
    deal_title: str | None
    contact_id: int | None
    contact_name: str | None
    days_overdue: int


@dataclass(frozen=True)
class WaitingLead:
    contact_id: int
    name: str
    email: str | None
    owner_id: int | None
    created_at: datetime
    hours_waiting: int


def _alertable_user(column: SQLColumnExpression[int | None]) -> ColumnElement[bool]:
    return and_(column.is_not(None), User.alerts_enabled.is_(True), User.active.is_(True))


def stall_cutoffs(session: Session, *, now: datetime, default_stall_days: int) -> dict[int, datetime]:
    """Per open stage: a deal in it with no stage change or activity since this time is stalled."""
    rows = session.execute(select(Stage.id, Stage.stall_days).where(Stage.kind == StageKind.OPEN)).all()
    return {stage_id: now - timedelta(days=days or default_stall_days) for stage_id, days in rows}


def stalled_condition(session: Session, *, now: datetime, default_stall_days: int) -> ColumnElement[bool]:
    """SQL condition on `Deal`: open and stalled at `now` (one branch per open stage: stages are few)."""
    cutoffs = stall_cutoffs(session, now=now, default_stall_days=default_stall_days)
    branches = [
        and_(
            Deal.stage_id == stage_id,
            Deal.stage_entered_at <= cutoff,
            or_(Deal.last_activity_at.is_(None), Deal.last_activity_at <= cutoff),
        )
        for stage_id, cutoff in sorted(cutoffs.items())
    ]
    return and_(Deal.status == DealStatus.OPEN, or_(*branches) if branches else false())


def stalled_select(
    session: Session, *columns: Any, now: datetime, default_stall_days: int, alertable_only: bool = True
) -> Select[Any]:
    """SELECT columns FROM the stalled deals (Deal and Stage joined, User too when alertable_only)."""
    query = (
        select(*columns)
        .select_from(Deal)
        .join(Stage, Stage.id == Deal.stage_id)
        .where(stalled_condition(session, now=now, default_stall_days=default_stall_days))
    )
    if alertable_only:
        query = query.join(User, User.id == Deal.owner_id).where(
            _alertable_user(Deal.owner_id), Deal.alerts_muted.is_(False), Stage.alerts_excluded.is_(False)
        )
    return query


def overdue_select(*columns: Any, now: datetime, alertable_only: bool = True) -> Select[Any]:
    """SELECT columns FROM the overdue tasks (Task; Deal, Contact outer-joined; User if alertable_only)."""
    query = (
        select(*columns)
        .select_from(Task)
        .outerjoin(Deal, Deal.id == Task.deal_id)
        .outerjoin(Contact, Contact.id == Task.contact_id)
        .where(Task.done_at.is_(None), Task.due_at < now)
    )
    if alertable_only:
        query = query.join(User, User.id == Task.assignee_id).where(_alertable_user(Task.assignee_id))
    return query


def waiting_leads_select(
    *columns: Any, now: datetime, lead_window_days: int, lead_response_hours: int, alertable_only: bool = True
) -> Select[Any]:
    """SELECT columns FROM the waiting leads (Contact; User when alertable_only)."""
    query = (
        select(*columns)
        .select_from(Contact)
        .where(
            uncontacted_condition(
                now=now,
                created_since=now - timedelta(days=lead_window_days),
                response=timedelta(hours=lead_response_hours),
            )
        )
    )
    if alertable_only:
        query = query.join(User, User.id == Contact.owner_id).where(_alertable_user(Contact.owner_id))
    return query


def stalled_deals(
    session: Session, *, now: datetime, default_stall_days: int, alertable_only: bool = True
) -> list[StalledDeal]:
    """Open deals with neither a stage change nor an activity for their stage's stall days."""
    query = stalled_select(
        session,
        Deal.id,
        Deal.title,
        Deal.owner_id,
        Stage.name,
        Stage.stall_days,
        Deal.stage_entered_at,
        Deal.last_activity_at,
        Deal.value,
        Deal.currency,
        now=now,
        default_stall_days=default_stall_days,
        alertable_only=alertable_only,
    ).order_by(Deal.id)
    result = []
    for deal_id, title, owner_id, stage, stage_days, entered_at, last_at, value, currency in session.execute(
        query
    ):
        since = max(entered_at, last_at) if last_at is not None else entered_at
        result.append(
            StalledDeal(
                deal_id=deal_id,
                title=title,
                owner_id=owner_id,
                stage=stage,
                stall_days=stage_days or default_stall_days,
                stalled_since=since,
                last_activity_at=last_at,
                value=value,
                currency=currency,
                days_stalled=(now - since).days,
            )
        )
    return result


def overdue_tasks(session: Session, *, now: datetime, alertable_only: bool = True) -> list[OverdueTask]:
    """Tasks whose due time has passed and that are not done."""
    query = overdue_select(
        Task.id,
        Task.title,
        Task.assignee_id,
        Task.due_at,
        Task.deal_id,
        Deal.title,
        Task.contact_id,
        Contact.name,
        now=now,
        alertable_only=alertable_only,
    ).order_by(Task.due_at, Task.id)
    result = []
    for task_id, title, assignee_id, due_at, deal_id, deal_title, contact_id, contact_name in session.execute(
        query
    ):
        assert due_at is not None  # the query keeps only tasks with a due time
        result.append(
            OverdueTask(
                task_id=task_id,
                title=title,
                assignee_id=assignee_id,
                due_at=due_at,
                deal_id=deal_id,
                deal_title=deal_title,
                contact_id=contact_id,
                contact_name=contact_name,
                days_overdue=(now - due_at).days,
            )
        )
    return result


def first_email_of_contact() -> Any:
    """Correlated subquery: a contact's first address (for display)."""
    return (
        select(ContactEmail.email)
        .where(ContactEmail.contact_id == Contact.id)
        .order_by(ContactEmail.id)
        .limit(1)
        .scalar_subquery()
    )


def waiting_leads(
    session: Session,
    *,
    now: datetime,
    lead_window_days: int,
    lead_response_hours: int,
    alertable_only: bool = True,
) -> list[WaitingLead]:
    """Contacts created in the last `lead_window_days`, at least `lead_response_hours` old, with no outbound
    email, call or meeting linked to them within `lead_response_hours` of their creation.
    """
    query = waiting_leads_select(
        Contact.id,
        Contact.name,
        first_email_of_contact(),
        Contact.owner_id,
        Contact.created_at,
        now=now,
        lead_window_days=lead_window_days,
        lead_response_hours=lead_response_hours,
        alertable_only=alertable_only,
    ).order_by(Contact.created_at, Contact.id)
    return [
        WaitingLead(
            contact_id=contact_id,
            name=name,
            email=email,
            owner_id=owner_id,
            created_at=created_at,
            hours_waiting=int((now - created_at).total_seconds() // 3600),
        )
        for contact_id, name, email, owner_id, created_at in session.execute(query)
    ]
