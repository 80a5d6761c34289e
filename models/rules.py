"""The attention rules, each written once: stalled deals, overdue tasks, waiting leads, and who gets alerts.

Everything that asks "what needs attention" calls this module: the board's stalled badge and the dashboard's
lists (models.reports), the alert decision (models.notifications, which inserts straight from the `*_select`
builders, so what is listed and what is alerted cannot drift apart) and the tests. Each rule is a SELECT
builder (the joins and the WHERE clause; the caller picks the columns) plus a listing function returning plain
dataclasses. With `alertable_only=True` a rule leaves out what must not be alerted: records without an
owner/assignee, owners who do not get alerts (`wants_alerts`), muted deals (`Deal.alerts_muted`) and deals in
excluded stages (`Stage.alerts_excluded`).

Stalled. An open deal is stalled when it has had neither a stage change nor an activity for its stage's
`stall_days` (else the configured default):

    last_touch     = max(stage_entered_at, last_activity_at)   (stage_entered_at when it had no activity)
    stalled        = status = 'open' AND last_touch <= now - stall days
    stalled_since  = last_touch + stall days

A deal's creation is its first stage entry, and every activity (email logged by the sync, call, meeting,
note, completed task) moves `Deal.last_activity_at` forward, so the rule reads only the deals table.
`StallRule` works out each stage's cutoff (now - its stall days) once, in Python, and the condition compares
the raw columns with those constants, one branch per distinct cutoff: no date arithmetic per row, which costs
~1.3 s on SQLite over 100,000 open deals.

Overdue task: not done, and due before now. The assignee is the one alerted.

No next step: an open deal with no open planned activity (no task not done). Pipedrive's habit: every open
deal always has a next step; the deal page, the board and my day flag the ones without.

Waiting lead: a contact created within `window` before now that had no outbound email, call or meeting up to
`response` after its creation; it is listed only once that response time has fully passed. The dashboard uses
a 30-day window and 7 days; the alerts use `[alerts] lead_window_days` and `lead_response_hours`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import Session, aliased

from models.schema import (
    Activity,
    ActivityKind,
    Company,
    Contact,
    ContactEmail,
    Deal,
    DealStatus,
    Direction,
    Pipeline,
    Stage,
    Task,
    User,
    activity_contacts,
)
from models.sql import at, seconds_between, shifted_by_seconds

T = TypeVar("T")

# outbound touches that count as reaching a lead (besides an outbound email)
CONTACTING_KINDS = (ActivityKind.CALL, ActivityKind.MEETING)


@dataclass(frozen=True)
class Listing(Generic[T]):
    """The first rows a rule lists (all of them without a limit) and how many it matches in all."""

    items: list[T]
    total: int


def whole_days(delta: timedelta) -> int:
    """Whole days in `delta` (0 for a negative one)."""
    return max(0, int(delta.total_seconds() // 86400))


# ---- who gets alerts --------------------------------------------------------------------------------------


def wants_alerts() -> ColumnElement[bool]:
    """On `User`: an active user who has not turned alerts off."""
    return and_(User.alerts_enabled.is_(True), User.active.is_(True))


def _owned_by_alertable(query: Select[Any], owner: SQLColumnExpression[int | None]) -> Select[Any]:
    """`query` kept to rows whose `owner` column names a user who wants alerts (User joined)."""
    return query.join(User, User.id == owner).where(owner.is_not(None), wants_alerts())


# ---- stalled deals ----------------------------------------------------------------------------------------


def last_touch_expr() -> ColumnElement[datetime]:
    """A deal's last stage change or activity: max(stage_entered_at, last_activity_at), NULL-safe."""
    return case(
        (Deal.last_activity_at > Deal.stage_entered_at, Deal.last_activity_at), else_=Deal.stage_entered_at
    )


@dataclass(frozen=True)
class StallRule:
    """The stalled rule at one moment: the stall days in force in each stage, and the SQL it gives."""

    now: datetime
    default_days: int
    days: Mapping[int, int]
    """Stage id -> its own stall_days, else the default."""

    @classmethod
    def of_stages(
        cls, stages: Iterable[tuple[int, int | None]], *, now: datetime, default_stall_days: int
    ) -> StallRule:
        """From (stage id, the stage's own stall_days or None) pairs, e.g. the stages of one pipeline."""
        days = {stage_id: own or default_stall_days for stage_id, own in stages}
        return cls(now=now, default_days=default_stall_days, days=days)

    @classmethod
    def load(cls, session: Session, *, now: datetime, default_stall_days: int) -> StallRule:
        """For every stage (stages are few: one small query)."""
        stages = session.execute(select(Stage.id, Stage.stall_days)).all()
        return cls.of_stages(((i, d) for i, d in stages), now=now, default_stall_days=default_stall_days)

    def cutoff(self, days: int) -> datetime:
        """A deal in a stage with these stall days and no touch since this time is stalled."""
        return self.now - timedelta(days=days)

    def condition(self) -> ColumnElement[bool]:
        """On `Deal`: open and stalled at `now` (no join needed)."""
        # One branch per stage, not one per distinct cutoff: with a single `stage_id IN (...)` branch SQLite
        # walks the (status, last_activity_at) index for the OR, 1.6x slower when most open deals are stalled.
        branches = []
        for stage_id, days in sorted(self.days.items()):
            cutoff = at(self.cutoff(days))
            branches.append(
                and_(
                    Deal.stage_id == stage_id,
                    Deal.stage_entered_at <= cutoff,
                    or_(Deal.last_activity_at.is_(None), Deal.last_activity_at <= cutoff),
                )
            )
        return and_(Deal.status == DealStatus.OPEN, or_(*branches) if branches else false())

    def stall_days_expr(self) -> ColumnElement[int]:
        """On `Deal`: the stall days in force in its stage."""
        default = literal(self.default_days, Integer)
        return case(dict(self.days), value=Deal.stage_id, else_=default) if self.days else default

    def most_stalled_first(self) -> ColumnElement[float]:
        """ORDER BY key on `Deal`: last touch minus its stage's cutoff in seconds (lowest: most stalled)."""
        cutoffs = {stage_id: at(self.cutoff(days)) for stage_id, days in self.days.items()}
        default = at(self.cutoff(self.default_days))
        cutoff = case(cutoffs, value=Deal.stage_id, else_=default) if cutoffs else default
        return seconds_between(cutoff, last_touch_expr())


def stalled_select(rule: StallRule, *columns: Any, alertable_only: bool = False) -> Select[Any]:
    """SELECT columns FROM the stalled deals (Deal and Stage joined; User too when alertable_only)."""
    query = select(*columns).select_from(Deal).join(Stage, Stage.id == Deal.stage_id).where(rule.condition())
    if alertable_only:
        query = _owned_by_alertable(query, Deal.owner_id).where(
            Deal.alerts_muted.is_(False), Stage.alerts_excluded.is_(False)
        )
    return query


@dataclass(frozen=True)
class StalledDeal:
    deal_id: int
    title: str
    pipeline_name: str
    stage_name: str
    company_name: str | None
    owner_id: int | None
    owner_name: str | None
    value: Decimal
    currency: str
    last_touch_at: datetime
    """Latest of the last stage change and the last activity."""
    last_activity_at: datetime | None
    stall_days: int
    """The threshold that applied (the stage's, else the default)."""
    days_since_touch: int
    stalled_since: datetime
    """last_touch_at + stall_days: when the deal became stalled."""


def stalled_deals(
    session: Session,
    *,
    now: datetime,
    default_stall_days: int,
    owner_id: int | None = None,
    pipeline_id: int | None = None,
    alertable_only: bool = False,
    limit: int | None = None,
) -> Listing[StalledDeal]:
    """The stalled deals, stalled earliest first (at most `limit`), and how many there are."""
    rule = StallRule.load(session, now=now, default_stall_days=default_stall_days)
    order = rule.most_stalled_first()
    top = stalled_select(
        rule,
        Deal.id.label("deal_id"),
        last_touch_expr().label("last_touch_at"),
        rule.stall_days_expr().label("stall_days"),
        order.label("rank"),
        # the total rides along on each of the top rows (a window over the matches): one pass instead of two
        func.count().over().label("total"),
        alertable_only=alertable_only,
    )
    if owner_id is not None:
        top = top.where(Deal.owner_id == owner_id)
    if pipeline_id is not None:
        top = top.where(Deal.pipeline_id == pipeline_id)
    shown = top.order_by(order, Deal.id).limit(limit).subquery()
    owner = aliased(User)
    rows = session.execute(
        select(
            shown.c.last_touch_at,
            shown.c.stall_days,
            shown.c.total,
            Deal.id,
            Deal.title,
            Pipeline.name,
            Stage.name,
            Company.name,
            Deal.owner_id,
            owner.name,
            Deal.value,
            Deal.currency,
            Deal.last_activity_at,
        )
        .join(Deal, Deal.id == shown.c.deal_id)
        .join(Stage, Stage.id == Deal.stage_id)
        .join(Pipeline, Pipeline.id == Deal.pipeline_id)
        .outerjoin(Company, Company.id == Deal.company_id)
        .outerjoin(owner, owner.id == Deal.owner_id)
        .order_by(shown.c.rank, Deal.id)
    ).all()
    deals = [
        StalledDeal(
            deal_id=deal_id,
            title=title,
            pipeline_name=pipeline_name,
            stage_name=stage_name,
            company_name=company_name,
            owner_id=deal_owner_id,
            owner_name=owner_name,
            value=value,
            currency=currency,
            last_touch_at=touched,
            last_activity_at=last_activity_at,
            stall_days=int(days),
            days_since_touch=whole_days(now - touched),
            stalled_since=touched + timedelta(days=int(days)),
        )
        for (
            touched,
            days,
            _total,
            deal_id,
            title,
            pipeline_name,
            stage_name,
            company_name,
            deal_owner_id,
            owner_name,
            value,
            currency,
            last_activity_at,
        ) in rows
    ]
    return Listing(deals, int(rows[0][2]) if rows else 0)


# ---- overdue tasks ----------------------------------------------------------------------------------------


def overdue_select(*columns: Any, now: datetime, alertable_only: bool = False) -> Select[Any]:
    """SELECT columns FROM the overdue tasks (Task; Deal, Contact outer-joined; User if alertable_only)."""
    query = (
        select(*columns)
        .select_from(Task)
        .outerjoin(Deal, Deal.id == Task.deal_id)
        .outerjoin(Contact, Contact.id == Task.contact_id)
        .where(Task.done_at.is_(None), Task.due_at < at(now))
    )
    if alertable_only:
        query = _owned_by_alertable(query, Task.assignee_id)
    return query


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


def overdue_tasks(
    session: Session, *, now: datetime, assignee_id: int | None = None, alertable_only: bool = False
) -> list[OverdueTask]:
    """Tasks whose due time has passed and that are not done, most overdue first."""
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
    if assignee_id is not None:
        query = query.where(Task.assignee_id == assignee_id)
    result = []
    for task_id, title, assignee, due_at, deal_id, deal_title, contact_id, contact_name in session.execute(
        query
    ):
        result.append(
            OverdueTask(
                task_id=task_id,
                title=title,
                assignee_id=assignee,
                due_at=due_at,
                deal_id=deal_id,
                deal_title=deal_title,
                contact_id=contact_id,
                contact_name=contact_name,
                days_overdue=whole_days(now - due_at),
            )
        )
    return result


# ---- deals without a next step -----------------------------------------------------------------------


def no_next_step_condition() -> ColumnElement[bool]:
    """On `Deal`: open, and no open planned activity on it."""
    planned = exists().where(Task.deal_id == Deal.id, Task.done_at.is_(None))
    return and_(Deal.status == DealStatus.OPEN, ~planned)


@dataclass(frozen=True)
class DealWithoutNextStep:
    deal_id: int
    title: str
    stage_name: str
    company_name: str | None
    owner_id: int | None
    value: Decimal
    currency: str


def deals_without_next_step(
    session: Session, *, owner_id: int | None = None, limit: int | None = None
) -> Listing[DealWithoutNextStep]:
    """Open deals with nothing planned, the most recently active first (at most `limit`), and how many."""
    top = (
        select(Deal.id.label("deal_id"), func.count().over().label("total"))
        .where(no_next_step_condition())
        .order_by(func.coalesce(Deal.last_activity_at, Deal.created_at).desc(), Deal.id.desc())
        .limit(limit)
    )
    if owner_id is not None:
        top = top.where(Deal.owner_id == owner_id)
    shown = top.subquery()
    rows = session.execute(
        select(
            Deal.id,
            Deal.title,
            Stage.name,
            Company.name,
            Deal.owner_id,
            Deal.value,
            Deal.currency,
            shown.c.total,
        )
        .select_from(shown)
        .join(Deal, Deal.id == shown.c.deal_id)
        .join(Stage, Stage.id == Deal.stage_id)
        .outerjoin(Company, Company.id == Deal.company_id)
        .order_by(func.coalesce(Deal.last_activity_at, Deal.created_at).desc(), Deal.id.desc())
    ).all()
    deals = [DealWithoutNextStep(*row[:7]) for row in rows]
    return Listing(deals, int(rows[0][7]) if rows else 0)


# ---- waiting leads ----------------------------------------------------------------------------------------


def first_email_of_contact() -> Any:
    """Correlated subquery on `Contact`: its first address (for display)."""
    return (
        select(ContactEmail.email)
        .where(ContactEmail.contact_id == Contact.id)
        .order_by(ContactEmail.id)
        .limit(1)
        .scalar_subquery()
    )


def contacted_condition(response: timedelta) -> ColumnElement[bool]:
    """On `Contact`: an outbound email, a call or a meeting with it up to `response` after its creation."""
    link = activity_contacts
    return exists().where(
        link.c.contact_id == Contact.id,
        Activity.id == link.c.activity_id,
        or_(
            Activity.kind.in_(CONTACTING_KINDS),
            and_(Activity.kind == ActivityKind.EMAIL, Activity.direction == Direction.OUT),
        ),
        Activity.occurred_at <= shifted_by_seconds(Contact.created_at, int(response.total_seconds())),
    )


def waiting_condition(*, now: datetime, window: timedelta, response: timedelta) -> ColumnElement[bool]:
    """On `Contact`: created in [now - window, now - response] and not contacted within `response`."""
    return and_(
        Contact.created_at >= at(now - window),
        Contact.created_at <= at(now - response),
        ~contacted_condition(response),
    )


def waiting_leads_select(
    *columns: Any, now: datetime, window: timedelta, response: timedelta, alertable_only: bool = False
) -> Select[Any]:
    """SELECT columns FROM the waiting leads (Contact; User when alertable_only)."""
    query = (
        select(*columns)
        .select_from(Contact)
        .where(waiting_condition(now=now, window=window, response=response))
    )
    if alertable_only:
        query = _owned_by_alertable(query, Contact.owner_id)
    return query


@dataclass(frozen=True)
class WaitingLead:
    contact_id: int
    name: str
    email: str | None
    company_name: str | None
    owner_id: int | None
    owner_name: str | None
    created_at: datetime
    hours_waiting: int
    days_waiting: int
    """Whole hours and days since the contact was created."""


def waiting_leads(
    session: Session,
    *,
    now: datetime,
    window: timedelta,
    response: timedelta,
    owner_id: int | None = None,
    alertable_only: bool = False,
    limit: int | None = None,
) -> Listing[WaitingLead]:
    """The waiting leads, longest waiting first (at most `limit`), and how many there are."""
    top = waiting_leads_select(
        Contact.id.label("contact_id"),
        # the anti-join runs once: the total rides along on each row (a window over the matches)
        func.count().over().label("total"),
        now=now,
        window=window,
        response=response,
        alertable_only=alertable_only,
    )
    if owner_id is not None:
        top = top.where(Contact.owner_id == owner_id)
    shown = top.order_by(Contact.created_at, Contact.id).limit(limit).subquery()
    owner = aliased(User)
    rows = session.execute(
        select(
            Contact.id,
            Contact.name,
            first_email_of_contact(),
            Company.name,
            Contact.owner_id,
            owner.name,
            Contact.created_at,
            shown.c.total,
        )
        .select_from(shown)
        .join(Contact, Contact.id == shown.c.contact_id)
        .outerjoin(Company, Company.id == Contact.company_id)
        .outerjoin(owner, owner.id == Contact.owner_id)
        .order_by(Contact.created_at, Contact.id)
    ).all()
    leads = [
        WaitingLead(
            contact_id=contact_id,
            name=name,
            email=email,
            company_name=company_name,
            owner_id=contact_owner_id,
            owner_name=owner_name,
            created_at=created_at,
            hours_waiting=int((now - created_at).total_seconds() // 3600),
            days_waiting=whole_days(now - created_at),
        )
        for contact_id, name, email, company_name, contact_owner_id, owner_name, created_at, _ in rows
    ]
    return Listing(leads, int(rows[0][7]) if rows else 0)
