"""Reports over deals and activities: the pipeline board and the dashboard.

Everything here is a handful of aggregate SQL queries (GROUP BY in the database); Python only shapes the
grouped rows into the dataclasses below. The same code runs on SQLite and PostgreSQL: day thresholds are
computed in Python and compared as timestamps, and the one place that needs per-row date arithmetic goes
through models.sql.

Money. Deals carry their own currency and no exchange rates exist, so every money figure is a
`MoneyByCurrency` (currency code -> Decimal), never a silent sum of euros and dollars; a single-currency team
sees a dict with one key. Weighted value = sum(value * stage probability / 100), computed exactly in cents.

Which deals are stalled and which new contacts still wait for a first answer are rules: they live in
models.rules (the alerts call the same ones). The board asks it for the stalled badge, the dashboard for its
two lists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import BigInteger, and_, case, func, or_, select, type_coerce, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from models.activities import NextActivity, next_activity_for_deals
from models.errors import DomainError, NotFoundError
from models.money import normalize_currency
from models.rules import (
    StalledDeal,
    StallRule,
    WaitingLead,
    last_touch_expr,
    stalled_deals,
    waiting_leads,
    whole_days,
)
from models.schema import (
    Activity,
    ActivityKind,
    Company,
    Contact,
    Deal,
    DealStatus,
    Pipeline,
    Role,
    SalesTarget,
    Stage,
    StageKind,
    User,
    deal_contacts,
)
from models.sql import at, seconds_between
from models.types import CENT

MoneyByCurrency = dict[str, Decimal]

WIN_RATE_DAYS = 90
ACTIVITY_DAYS = 30
NEW_CONTACT_DAYS = 30
NEW_CONTACT_RESPONSE = timedelta(days=7)
FORECAST_MONTHS = 6
TOP_LIST = 20


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BoardCard:
    deal_id: int
    title: str
    company_name: str | None
    value: Decimal
    currency: str
    owner_id: int | None
    owner_name: str | None
    days_in_stage: int
    stalled: bool
    last_touch_at: datetime
    expected_close_on: date | None
    next_activity: NextActivity | None = None
    """The deal's next planned activity (models.activities), None when nothing is planned."""


@dataclass(frozen=True)
class BoardColumn:
    stage_id: int
    name: str
    kind: StageKind
    probability: int
    stall_days: int
    """The stage's own stall_days, else the default passed to board()."""
    count: int
    total: MoneyByCurrency
    weighted: MoneyByCurrency
    cards: list[BoardCard]
    """Open stages: at most cards_per_column, most recently active (last touch) first. Won and lost stages
    (drop zones on the board) carry no cards, only their count and totals."""
    more: int
    """Deals in this column not among `cards`."""


@dataclass(frozen=True)
class Board:
    pipeline_id: int
    pipeline_name: str
    owner_id: int | None
    columns: list[BoardColumn]
    """One per stage of the pipeline, in stage order (empty stages included)."""
    currencies: list[str]
    """Every currency appearing in the columns' totals, sorted."""


@dataclass(frozen=True)
class StageTotal:
    """Open deals in one stage."""

    pipeline_id: int
    pipeline_name: str
    stage_id: int
    stage_name: str
    probability: int
    count: int
    value: MoneyByCurrency
    weighted: MoneyByCurrency


@dataclass(frozen=True)
class ForecastBucket:
    """Open deals by expected close date, in the team's time zone.

    key is "overdue" (expected before today), "YYYY-MM" for this month and the next five (this month counts
    from today), "later" (after those six months) or "none" (no expected close date).
    """

    key: str
    label: str
    start: date | None
    count: int
    value: MoneyByCurrency
    weighted: MoneyByCurrency


@dataclass(frozen=True)
class WinRate:
    won: int
    lost: int

    @property
    def closed(self) -> int:
        return self.won + self.lost

    @property
    def rate(self) -> float | None:
        """won / (won + lost), None when nothing closed."""
        return self.won / self.closed if self.closed else None


@dataclass(frozen=True)
class RepActivity:
    user_id: int
    name: str
    counts: dict[ActivityKind, int]
    """Every kind present, zero when the rep logged none of it."""
    total: int


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    tz: str
    pipeline_id: int | None
    owner_id: int | None
    open_by_stage: list[StageTotal]
    """Open stages of the pipeline(s) in board order, empty stages included."""
    open_total: MoneyByCurrency
    open_weighted: MoneyByCurrency
    open_count: int
    forecast: list[ForecastBucket]
    """overdue, the six months, later, none (always all nine buckets, in that order)."""
    win_rate_90d: WinRate
    win_rate_all_time: WinRate
    average_deal_size_90d: MoneyByCurrency
    """Mean value of deals won in the last 90 days, per currency."""
    average_cycle_days_90d: float | None
    """Mean days from created_at to closed_at of deals won in the last 90 days."""
    activities_by_rep: list[RepActivity]
    """Activities in the last 30 days by author, most active first (activities with no author left out)."""
    activity_kinds: list[ActivityKind]
    stalled: list[StalledDeal]
    """The 20 most stalled open deals (stalled earliest first)."""
    stalled_count: int
    uncontacted: list[WaitingLead]
    """Up to 20 contacts created in the last 30 days with no outbound email, call or meeting within 7 days of
    their creation (contacts younger than 7 days are still in their window and not listed), oldest first."""
    uncontacted_count: int
    currencies: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Board


def board(
    session: Session,
    *,
    pipeline_id: int,
    now: datetime,
    default_stall_days: int,
    owner_id: int | None = None,
    cards_per_column: int = 50,
) -> Board:
    """The kanban of one pipeline: a column per stage with count, totals, weighted totals and its top cards.

    Won and lost columns count every deal in those stages (counts and totals over all of them) but carry no
    cards: the board shows them as drop zones. Each card carries its next planned step (earliest open task).
    `owner_id` keeps only that owner's deals. Raises NotFoundError for an unknown
    pipeline, DomainError for a negative `cards_per_column`.
    """
    if cards_per_column < 0:
        raise DomainError(f"cards_per_column must be 0 or more, got {cards_per_column}")
    pipeline = session.get(Pipeline, pipeline_id)
    if pipeline is None:
        raise NotFoundError(f"pipeline {pipeline_id} does not exist")
    stages = session.scalars(
        select(Stage).where(Stage.pipeline_id == pipeline_id).order_by(Stage.position, Stage.id)
    ).all()
    scope = [Deal.pipeline_id == pipeline_id]
    if owner_id is not None:
        scope.append(Deal.owner_id == owner_id)

    totals = _stage_totals(session, scope)

    touch = last_touch_expr()
    # one top-N query per stage (a bounded sort each) beats a window over the whole pipeline by ~5x on SQLite
    per_stage = [
        select(Deal.id.label("deal_id"))
        .where(*scope, Deal.stage_id == stage.id)
        .order_by(touch.desc(), Deal.id.desc())
        .limit(cards_per_column)
        .subquery()
        for stage in stages
        if stage.kind == StageKind.OPEN
    ]
    shown = union_all(*(select(top.c.deal_id) for top in per_stage)).subquery() if per_stage else None
    # the stalled badge is worked out for the shown cards only, not for every deal of the pipeline
    stalled = StallRule.of_stages(
        ((s.id, s.stall_days) for s in stages), now=now, default_stall_days=default_stall_days
    ).condition()
    owner = aliased(User)
    rows = (
        session.execute(
            select(
                Deal.stage_id,
                touch,
                case((stalled, 1), else_=0),
                Deal.id,
                Deal.title,
                Company.name,
                Deal.value,
                Deal.currency,
                Deal.owner_id,
                owner.name,
                Deal.stage_entered_at,
                Deal.expected_close_on,
            )
            .select_from(shown)
            .join(Deal, Deal.id == shown.c.deal_id)
            .outerjoin(Company, Company.id == Deal.company_id)
            .outerjoin(owner, owner.id == Deal.owner_id)
            .order_by(Deal.stage_id, touch.desc(), Deal.id.desc())
        ).all()
        if shown is not None
        else []
    )
    next_steps = next_activity_for_deals(session, [row[3] for row in rows])
    cards: dict[int, list[BoardCard]] = defaultdict(list)
    for row in rows:
        cards[row[0]].append(
            BoardCard(
                deal_id=row[3],
                title=row[4],
                company_name=row[5],
                value=row[6],
                currency=row[7],
                owner_id=row[8],
                owner_name=row[9],
                days_in_stage=whole_days(now - row[10]),
                stalled=bool(row[2]),
                last_touch_at=row[1],
                expected_close_on=row[11],
                next_activity=next_steps.get(row[3]),
            )
        )

    columns = []
    for stage in stages:
        total = totals.get(stage.id, _Totals())
        column_cards = cards.get(stage.id, [])
        columns.append(
            BoardColumn(
                stage_id=stage.id,
                name=stage.name,
                kind=stage.kind,
                probability=stage.probability,
                stall_days=stage.stall_days if stage.stall_days is not None else default_stall_days,
                count=total.count,
                total=total.value_money(),
                weighted=total.weighted_money(),
                cards=column_cards,
                more=total.count - len(column_cards),
            )
        )
    return Board(
        pipeline_id=pipeline.id,
        pipeline_name=pipeline.name,
        owner_id=owner_id,
        columns=columns,
        currencies=sorted({c for column in columns for c in column.total}),
    )


# ----------------------------------------------------------------------------------------------------------
# Dashboard


def dashboard(
    session: Session,
    *,
    now: datetime,
    tz: str,
    default_stall_days: int,
    pipeline_id: int | None = None,
    owner_id: int | None = None,
    recent: bool = True,
) -> Dashboard:
    """The sales dashboard's numbers (see Dashboard's fields for each definition).

    `tz` (an IANA name, e.g. the team's timezone) decides today's date and the month buckets of the forecast.
    `pipeline_id` restricts deal figures to one pipeline; `owner_id` restricts deal figures to that owner's
    deals, activities to that author and new contacts to that owner. `recent=False` leaves out the fixed
    90-day win rate, deal size and cycle and the 30-day activities (empty or zero) for callers that show a
    period's figures instead (`performance`). Raises DomainError for an unknown tz.
    """
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise DomainError(f"unknown time zone {tz!r}") from None
    scope: list[ColumnElement[bool]] = []
    if pipeline_id is not None:
        scope.append(Deal.pipeline_id == pipeline_id)
    if owner_id is not None:
        scope.append(Deal.owner_id == owner_id)
    is_open = Deal.status == DealStatus.OPEN

    stage_rows = session.execute(
        select(Stage, Pipeline.name)
        .join(Pipeline, Pipeline.id == Stage.pipeline_id)
        .where(
            Stage.kind == StageKind.OPEN,
            *([Stage.pipeline_id == pipeline_id] if pipeline_id is not None else []),
        )
        .order_by(Pipeline.position, Pipeline.id, Stage.position, Stage.id)
    ).all()
    # one pass over the open deals serves both the stage totals and the forecast (grouped by close date)
    open_rows = session.execute(
        select(Deal.stage_id, Deal.expected_close_on, Deal.currency, *_money_columns())
        .join(Stage, Stage.id == Deal.stage_id)
        .where(*scope, is_open)
        .group_by(Deal.stage_id, Deal.expected_close_on, Deal.currency)
    ).all()
    totals: dict[int, _Totals] = defaultdict(_Totals)
    grand = _Totals()
    for stage_id, _expected, currency, count, cents, weighted in open_rows:
        totals[stage_id].add_row(currency, count, cents, weighted)
        # summed over every stage, so open deals left in a stage whose kind changed still count in the total
        grand.add_row(currency, count, cents, weighted)
    open_by_stage = []
    for stage, pipeline_name in stage_rows:
        total = totals.get(stage.id, _Totals())
        open_by_stage.append(
            StageTotal(
                pipeline_id=stage.pipeline_id,
                pipeline_name=pipeline_name,
                stage_id=stage.id,
                stage_name=stage.name,
                probability=stage.probability,
                count=total.count,
                value=total.value_money(),
                weighted=total.weighted_money(),
            )
        )

    forecast = _forecast([row[1:] for row in open_rows], today=now.astimezone(zone).date())
    if recent:
        closed = _closed(session, scope=scope, since=now - timedelta(days=WIN_RATE_DAYS))
        activities, kinds = _activities_by_rep(
            session, since=now - timedelta(days=ACTIVITY_DAYS), now=now, author_id=owner_id
        )
    else:
        closed = _Closed(WinRate(0, 0), WinRate(0, 0), {}, None)
        activities, kinds = [], list(ActivityKind)
    stalled = stalled_deals(
        session,
        now=now,
        default_stall_days=default_stall_days,
        owner_id=owner_id,
        pipeline_id=pipeline_id,
        limit=TOP_LIST,
    )
    waiting = waiting_leads(
        session,
        now=now,
        window=timedelta(days=NEW_CONTACT_DAYS),
        response=NEW_CONTACT_RESPONSE,
        owner_id=owner_id,
        limit=TOP_LIST,
    )

    currencies = {c for s in open_by_stage for c in s.value} | {c for b in forecast for c in b.value}
    currencies |= set(closed.average_size)
    return Dashboard(
        now=now,
        tz=tz,
        pipeline_id=pipeline_id,
        owner_id=owner_id,
        open_by_stage=open_by_stage,
        open_total=grand.value_money(),
        open_weighted=grand.weighted_money(),
        open_count=grand.count,
        forecast=forecast,
        win_rate_90d=closed.recent,
        win_rate_all_time=closed.all_time,
        average_deal_size_90d=closed.average_size,
        average_cycle_days_90d=closed.average_cycle_days,
        activities_by_rep=activities,
        activity_kinds=kinds,
        stalled=stalled.items,
        stalled_count=stalled.total,
        uncontacted=waiting.items,
        uncontacted_count=waiting.total,
        currencies=sorted(currencies),
    )


# ----------------------------------------------------------------------------------------------------------
# Query helpers

_CENTS = type_coerce(Deal.value, BigInteger)


@dataclass
class _Totals:
    """Deal count and sums in integer cents (weighted: cents x probability percent), per currency."""

    count: int = 0
    cents: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    weighted_cents_pct: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add_row(self, currency: str, count: int, cents: Any, weighted: Any) -> None:
        self.count += int(count)
        self.cents[currency] += int(cents or 0)
        self.weighted_cents_pct[currency] += int(weighted or 0)

    def add(self, other: _Totals) -> None:
        self.count += other.count
        for currency, cents in other.cents.items():
            self.cents[currency] += cents
        for currency, weighted in other.weighted_cents_pct.items():
            self.weighted_cents_pct[currency] += weighted

    def value_money(self) -> MoneyByCurrency:
        return {c: (Decimal(v) / 100).quantize(CENT) for c, v in sorted(self.cents.items())}

    def weighted_money(self) -> MoneyByCurrency:
        return {
            c: (Decimal(v) / 10000).quantize(CENT, rounding=ROUND_HALF_UP)
            for c, v in sorted(self.weighted_cents_pct.items())
        }


def _money_columns() -> tuple[ColumnElement[Any], ...]:
    return (
        func.count(Deal.id),
        func.sum(_CENTS),
        func.sum(_CENTS * Stage.probability),
    )


def _stage_totals(session: Session, where: list[ColumnElement[bool]]) -> dict[int, _Totals]:
    rows = session.execute(
        select(Deal.stage_id, Deal.currency, *_money_columns())
        .join(Stage, Stage.id == Deal.stage_id)
        .where(*where)
        .group_by(Deal.stage_id, Deal.currency)
    ).all()
    totals: dict[int, _Totals] = defaultdict(_Totals)
    for stage_id, currency, count, cents, weighted in rows:
        totals[stage_id].add_row(currency, count, cents, weighted)
    return totals


def _add_months(start: date, months: int) -> date:
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _forecast(rows: Sequence[Sequence[Any]], *, today: date) -> list[ForecastBucket]:
    """Month buckets from (expected_close_on, currency, count, cents, weighted) rows, grouped by date."""
    first = today.replace(day=1)
    months = [_add_months(first, i) for i in range(FORECAST_MONTHS)]
    end = _add_months(first, FORECAST_MONTHS)
    keys = ["overdue", *(m.strftime("%Y-%m") for m in months), "later", "none"]
    buckets = {key: _Totals() for key in keys}
    for expected, currency, count, cents, weighted in rows:
        if expected is None:
            key = "none"
        elif expected < today:
            key = "overdue"
        elif expected >= end:
            key = "later"
        else:
            key = expected.strftime("%Y-%m")
        buckets[key].add_row(currency, count, cents, weighted)
    labels = {"overdue": "Overdue", "later": f"{end:%b %Y} or later", "none": "No date"}
    starts: dict[str, date | None] = {m.strftime("%Y-%m"): m for m in months}
    starts.update({"overdue": None, "later": end, "none": None})
    return [
        ForecastBucket(
            key=key,
            label=labels.get(key) or f"{starts[key]:%b %Y}",
            start=starts[key],
            count=buckets[key].count,
            value=buckets[key].value_money(),
            weighted=buckets[key].weighted_money(),
        )
        for key in keys
    ]


@dataclass(frozen=True)
class _Closed:
    recent: WinRate
    all_time: WinRate
    average_size: MoneyByCurrency
    average_cycle_days: float | None


def _closed(session: Session, *, scope: list[ColumnElement[bool]], since: datetime) -> _Closed:
    recent = case((Deal.closed_at >= at(since), 1), else_=0)
    rows = session.execute(
        select(
            Deal.status,
            recent,
            Deal.currency,
            func.count(Deal.id),
            func.sum(_CENTS),
            # the cycle length is only needed (and only computed) for recently won deals
            func.sum(
                case(
                    (
                        and_(Deal.status == DealStatus.WON, Deal.closed_at >= at(since)),
                        seconds_between(Deal.created_at, Deal.closed_at),
                    ),
                    else_=0,
                )
            ),
        )
        .where(*scope, Deal.status.in_((DealStatus.WON, DealStatus.LOST)), Deal.closed_at.is_not(None))
        .group_by(Deal.status, recent, Deal.currency)
    ).all()
    counts: dict[tuple[DealStatus, bool], int] = defaultdict(int)
    won_recent_cents: dict[str, int] = defaultdict(int)
    won_recent_count: dict[str, int] = defaultdict(int)
    cycle_seconds = 0.0
    for status, is_recent, currency, count, cents, seconds in rows:
        counts[status, bool(is_recent)] += count
        if status == DealStatus.WON and is_recent:
            won_recent_cents[currency] += int(cents or 0)
            won_recent_count[currency] += count
            cycle_seconds += float(seconds or 0)
    won_recent = counts[DealStatus.WON, True]
    lost_recent = counts[DealStatus.LOST, True]
    return _Closed(
        recent=WinRate(won=won_recent, lost=lost_recent),
        all_time=WinRate(
            won=won_recent + counts[DealStatus.WON, False], lost=lost_recent + counts[DealStatus.LOST, False]
        ),
        average_size={
            c: (Decimal(won_recent_cents[c]) / 100 / n).quantize(CENT, rounding=ROUND_HALF_UP)
            for c, n in sorted(won_recent_count.items())
        },
        average_cycle_days=cycle_seconds / 86400 / won_recent if won_recent else None,
    )


def _activities_by_rep(
    session: Session, *, since: datetime, now: datetime, author_id: int | None
) -> tuple[list[RepActivity], list[ActivityKind]]:
    kinds = list(ActivityKind)
    # `author_id IN (users) AND kind IN (kinds)` walks ix_activities_author_id_kind_occurred_at as one
    # index-only range per author and kind, already in GROUP BY order: no table reads, no sort, and no need
    # for SQLite's statistics (a skip-scan) or PostgreSQL's
    authors = select(User.id) if author_id is None else select(User.id).where(User.id == author_id)
    counts: dict[int, dict[ActivityKind, int]] = {}
    for user_id, kind, n in session.execute(
        select(Activity.author_id, Activity.kind, func.count())
        .where(
            Activity.author_id.in_(authors.scalar_subquery()),
            Activity.kind.in_(kinds),
            Activity.occurred_at > at(since),
            Activity.occurred_at <= at(now),
        )
        .group_by(Activity.author_id, Activity.kind)
    ):
        counts.setdefault(int(user_id or 0), dict.fromkeys(kinds, 0))[ActivityKind(kind)] += n
    names = (
        {uid: name for uid, name in session.execute(select(User.id, User.name).where(User.id.in_(counts)))}
        if counts
        else {}
    )
    reps = [
        RepActivity(user_id=user_id, name=names[user_id], counts=per_kind, total=sum(per_kind.values()))
        for user_id, per_kind in counts.items()
    ]
    reps.sort(key=lambda r: (-r.total, r.name.lower(), r.user_id))
    return reps, kinds


# ----------------------------------------------------------------------------------------------------------
# Periods, lead sources and targets (the dashboard's period view)

PERIOD_KINDS = ("month", "quarter", "year", "custom")
MAX_CUSTOM_DAYS = 3660
NO_SOURCE = ""
"""The lead source of deals whose contacts have none."""


@dataclass(frozen=True)
class Period:
    """Whole days [starts_on, ends_on) in the team's time zone."""

    kind: str
    starts_on: date
    ends_on: date
    """The first day after the period."""

    @property
    def last_day(self) -> date:
        return self.ends_on - timedelta(days=1)

    def bounds(self, tz: str) -> tuple[datetime, datetime]:
        """The period as UTC-aware instants [start, end): midnight to midnight in `tz`."""
        zone = _zone(tz)
        return (
            datetime.combine(self.starts_on, datetime.min.time(), zone),
            datetime.combine(self.ends_on, datetime.min.time(), zone),
        )


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise DomainError(f"unknown time zone {tz!r}") from None


def period_of(
    kind: str, *, today: date, starts_on: date | None = None, last_day: date | None = None
) -> Period:
    """This month, quarter or year (the one holding `today`), or a custom range of whole days (both ends in).

    Raises DomainError for an unknown kind, a custom range without both ends, ending before it starts, or
    longer than ten years.
    """
    if kind == "month":
        first = today.replace(day=1)
        return Period(kind, first, _add_months(first, 1))
    if kind == "quarter":
        first = date(today.year, (today.month - 1) // 3 * 3 + 1, 1)
        return Period(kind, first, _add_months(first, 3))
    if kind == "year":
        return Period(kind, date(today.year, 1, 1), date(today.year + 1, 1, 1))
    if kind != "custom":
        raise DomainError(f"choose a period: {', '.join(PERIOD_KINDS)}")
    if starts_on is None or last_day is None:
        raise DomainError("a custom period needs a first and a last day")
    if last_day < starts_on:
        raise DomainError("the period's last day is before its first day")
    if (last_day - starts_on).days > MAX_CUSTOM_DAYS:
        raise DomainError("a custom period is at most ten years long")
    return Period(kind, starts_on, last_day + timedelta(days=1))


@dataclass(frozen=True)
class SourceResult:
    """Deals closed in the period whose lead source is `source` (NO_SOURCE: none of its contacts has one)."""

    source: str
    won: int
    lost: int
    won_value: MoneyByCurrency

    @property
    def conversion(self) -> float | None:
        """won / (won + lost) of the deals closed in the period, None when none closed."""
        closed = self.won + self.lost
        return self.won / closed if closed else None


@dataclass(frozen=True)
class RepResult:
    user_id: int
    name: str
    activities: int
    """Activities the rep authored in the period (emails, calls, meetings, notes, completed tasks)."""
    won_count: int
    won_value: MoneyByCurrency
    target: Decimal | None
    target_currency: str | None

    @property
    def progress(self) -> float | None:
        """Won value in the target's currency / the target, None without a target."""
        if self.target is None or self.target_currency is None or self.target <= 0:
            return None
        return float(self.won_value.get(self.target_currency, Decimal(0)) / self.target)


@dataclass(frozen=True)
class Performance:
    period: Period
    won: int
    lost: int
    won_value: MoneyByCurrency
    average_deal_size: MoneyByCurrency
    """Mean value of the deals won in the period, per currency."""
    by_source: list[SourceResult]
    """Most won value first (summed over currencies as plain numbers, only to order), NO_SOURCE last."""
    reps: list[RepResult]
    """Active reps and managers, plus anyone with activities, wins or a target in the period; by name."""

    @property
    def conversion(self) -> float | None:
        closed = self.won + self.lost
        return self.won / closed if closed else None


def lead_source_expr() -> ColumnElement[str | None]:
    """A deal's lead source: that of its first contact (lowest id) that has one."""
    return (
        select(Contact.lead_source)
        .join(deal_contacts, deal_contacts.c.contact_id == Contact.id)
        .where(
            deal_contacts.c.deal_id == Deal.id,
            Contact.lead_source.is_not(None),
            func.trim(Contact.lead_source) != "",
        )
        .order_by(Contact.id)
        .limit(1)
        .scalar_subquery()
    )


def performance(
    session: Session,
    *,
    period: Period,
    tz: str,
    pipeline_id: int | None = None,
    owner_id: int | None = None,
) -> Performance:
    """What happened in a period: deals won and lost (by close time), by lead source, average won deal,
    and per rep their activities, won value and target. `owner_id` keeps one rep's deals and activities."""
    start, end = period.bounds(tz)
    scope: list[ColumnElement[bool]] = [
        Deal.status.in_((DealStatus.WON, DealStatus.LOST)),
        Deal.closed_at >= at(start),
        Deal.closed_at < at(end),
    ]
    if pipeline_id is not None:
        scope.append(Deal.pipeline_id == pipeline_id)
    if owner_id is not None:
        scope.append(Deal.owner_id == owner_id)
    source = lead_source_expr().label("source")
    closed = select(Deal.status, Deal.owner_id, Deal.currency, Deal.value, source).where(*scope).subquery()
    rows = session.execute(
        select(
            closed.c.status,
            closed.c.owner_id,
            closed.c.currency,
            closed.c.source,
            func.count(),
            func.sum(type_coerce(closed.c.value, BigInteger)),
        ).group_by(closed.c.status, closed.c.owner_id, closed.c.currency, closed.c.source)
    ).all()
    won = lost = 0
    won_cents: dict[str, int] = defaultdict(int)
    won_count: dict[str, int] = defaultdict(int)
    sources: dict[str, list[Any]] = {}
    rep_won: dict[int, list[Any]] = {}
    for status, owner, currency, lead_source, count, cents in rows:
        key = (lead_source or "").strip() or NO_SOURCE
        entry = sources.setdefault(key, [0, 0, defaultdict(int)])
        if DealStatus(status) == DealStatus.LOST:
            lost += count
            entry[1] += count
            continue
        won += count
        entry[0] += count
        entry[2][currency] += int(cents or 0)
        won_cents[currency] += int(cents or 0)
        won_count[currency] += count
        if owner is not None:
            per_rep = rep_won.setdefault(owner, [0, defaultdict(int)])
            per_rep[0] += count
            per_rep[1][currency] += int(cents or 0)

    by_source = [
        SourceResult(source=key, won=w, lost=lo, won_value=_money_of(cents))
        for key, (w, lo, cents) in sources.items()
    ]
    by_source.sort(
        key=lambda s: (s.source == NO_SOURCE, -sum(s.won_value.values()), -s.won, s.source.lower())
    )

    # activities in [start, end): _activities_by_rep counts (since, until], so both ends move back 1 µs
    tick = timedelta(microseconds=1)
    activities, _kinds = _activities_by_rep(session, since=start - tick, now=end - tick, author_id=owner_id)
    activity_counts = {a.user_id: a.total for a in activities}
    targets = targets_for(session, period, user_id=owner_id)

    people = select(User.id, User.name).where(
        or_(
            and_(User.active.is_(True), User.role.in_((Role.REP, Role.MANAGER))),
            User.id.in_(set(activity_counts) | set(rep_won) | set(targets) or {-1}),
        )
    )
    if owner_id is not None:
        people = people.where(User.id == owner_id)
    reps = []
    for user_id, name in session.execute(people.order_by(User.name, User.id)):
        count, cents = rep_won.get(user_id, [0, {}])
        target = targets.get(user_id)
        reps.append(
            RepResult(
                user_id=user_id,
                name=name,
                activities=activity_counts.get(user_id, 0),
                won_count=count,
                won_value=_money_of(cents),
                target=target[0] if target else None,
                target_currency=target[1] if target else None,
            )
        )
    return Performance(
        period=period,
        won=won,
        lost=lost,
        won_value=_money_of(won_cents),
        average_deal_size={
            c: (Decimal(won_cents[c]) / 100 / n).quantize(CENT, rounding=ROUND_HALF_UP)
            for c, n in sorted(won_count.items())
        },
        by_source=by_source,
        reps=reps,
    )


def _money_of(cents: dict[str, int]) -> MoneyByCurrency:
    return {c: (Decimal(v) / 100).quantize(CENT) for c, v in sorted(cents.items())}


def targets_for(
    session: Session, period: Period, *, user_id: int | None = None
) -> dict[int, tuple[Decimal, str]]:
    """Each rep's target for the period: the one set for exactly this period, else the sum of the targets set
    for periods inside it (a quarter without its own target adds up its months), in one currency (the
    currency of most of those targets; others are left out, never converted)."""
    query = select(SalesTarget).where(
        SalesTarget.starts_on >= period.starts_on, SalesTarget.ends_on <= period.ends_on
    )
    if user_id is not None:
        query = query.where(SalesTarget.user_id == user_id)
    exact: dict[int, tuple[Decimal, str]] = {}
    inside: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for target in session.scalars(query):
        if (target.starts_on, target.ends_on) == (period.starts_on, period.ends_on):
            exact[target.user_id] = (target.amount, target.currency)
        else:
            inside[target.user_id][target.currency] += target.amount
    result = dict(exact)
    for uid, amounts in inside.items():
        if uid not in result:
            currency = max(amounts, key=lambda c: (amounts[c], c))
            result[uid] = (amounts[currency], currency)
    return result


def set_target(
    session: Session,
    *,
    user: User,
    period: Period,
    amount: Decimal | None,
    currency: str,
    now: datetime,
    by: User | None = None,
) -> SalesTarget | None:
    """Set (or with `amount` None, remove) a rep's target for exactly this period. Raises DomainError for a
    negative amount or an unknown currency."""
    existing = session.scalar(
        select(SalesTarget).where(
            SalesTarget.user_id == user.id,
            SalesTarget.starts_on == period.starts_on,
            SalesTarget.ends_on == period.ends_on,
        )
    )
    if amount is None:
        if existing is not None:
            session.delete(existing)
            session.flush()
        return None
    if amount < 0:
        raise DomainError("a target is zero or more")
    code = normalize_currency(currency)
    if existing is None:
        existing = SalesTarget(user=user, starts_on=period.starts_on, ends_on=period.ends_on)
        session.add(existing)
    existing.amount = amount
    existing.currency = code
    existing.set_by_id = by.id if by is not None else None
    existing.updated_at = now
    session.flush()
    return existing
