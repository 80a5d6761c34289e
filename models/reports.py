"""Reports over deals and activities: the pipeline board, the dashboard, and the stalled-deal rule they share.

Everything here is a handful of aggregate SQL queries (GROUP BY in the database); Python only shapes the
grouped rows into the dataclasses below. The same code runs on SQLite and PostgreSQL: day thresholds are
computed in Python and compared as timestamps, and the two places that need per-row date arithmetic go
through `shifted_by_seconds` / `seconds_between`, compiled per dialect.

Money. Deals carry their own currency and no exchange rates exist, so every money figure is a
`MoneyByCurrency` (currency code -> Decimal), never a silent sum of euros and dollars; a single-currency team
sees a dict with one key. Weighted value = sum(value * stage probability / 100), computed exactly in cents.

The stalled rule (shared with the alerts scan in models/rules.py). A deal is stalled when it is open and has
had neither a stage change nor an activity for its stage's `stall_days` (else the configured default):

    last_touch  = max(stage_entered_at, coalesce(last_activity_at, created_at))
    stalled     = status = 'open' AND last_touch + stall_days days <= now

Use `stalled_condition(now, default_stall_days)` in any query that joins Stage (`Deal.stage_id ==
Stage.id`), or start from `stalled_deals_query(now=..., default_stall_days=...)` which does the join and
returns one row per stalled deal (deal id, last touch, effective stall days, the moment it stalled), most
stalled first; add your own filters (Stage.alerts_excluded, Deal.alerts_muted, owner opt-outs) on top.
Both take `stages=stage_stall_days(session)` for a faster form that selects exactly the same deals: the
per-stage thresholds are then computed once in Python instead of per deal in SQL (on SQLite that per-row
date math is most of the query's time). `last_touch_expr()` and `stall_days_expr(default)` are the pieces.

The new-lead rule. A contact waits for a first touch when it was created in the window and no outbound email,
call or meeting involving it occurred up to `response` after its creation; it is only reported once that
response time has fully elapsed. `uncontacted_condition(now=..., created_since=..., response=...)`
expresses it (the dashboard uses response = 7 days and a 30-day window; the alerts scan uses
`[alerts] lead_response_hours` and `lead_window_days`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from models.errors import DomainError, NotFoundError
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
    StageKind,
    User,
    activity_contacts,
)
from models.types import CENT, UTCDateTime

MoneyByCurrency = dict[str, Decimal]

WIN_RATE_DAYS = 90
ACTIVITY_DAYS = 30
NEW_CONTACT_DAYS = 30
NEW_CONTACT_RESPONSE = timedelta(days=7)
FORECAST_MONTHS = 6
TOP_LIST = 20
# outbound touches that count as "contacted" (the alerts issue's new-lead rule)
CONTACTING_KINDS = (ActivityKind.CALL, ActivityKind.MEETING)


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
    """At most cards_per_column, most recently active (last touch) first."""
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
    stall_days: int
    """The threshold that applied (the stage's, else the default)."""
    days_since_touch: int
    stalled_since: datetime
    """last_touch_at + stall_days."""


@dataclass(frozen=True)
class WaitingContact:
    contact_id: int
    name: str
    email: str | None
    company_name: str | None
    owner_id: int | None
    owner_name: str | None
    created_at: datetime
    days_waiting: int
    """Whole days since the contact was created."""


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
    uncontacted: list[WaitingContact]
    """Up to 20 contacts created in the last 30 days with no outbound email, call or meeting within 7 days of
    their creation (contacts younger than 7 days are still in their window and not listed), oldest first."""
    uncontacted_count: int
    currencies: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Portable date arithmetic


class shifted_by_seconds(FunctionElement[datetime]):
    """SQL `timestamp + seconds` (a SQL number expression, may be negative), on SQLite and PostgreSQL.

    On SQLite, timestamps are text 'YYYY-MM-DD HH:MM:SS.ffffff'; the result keeps that shape (with millisecond
    precision) so it compares correctly with stored values.
    """

    type = UTCDateTime()
    inherit_cache = True
    name = "threadline_shifted_by_seconds"


@compiles(shifted_by_seconds)
def _shifted_default(element: shifted_by_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"({when} + make_interval(secs => {seconds}))"


@compiles(shifted_by_seconds, "sqlite")
def _shifted_sqlite(element: shifted_by_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    when, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"(strftime('%Y-%m-%d %H:%M:%f', {when}, ({seconds}) || ' seconds') || '000')"


class seconds_between(FunctionElement[float]):
    """SQL `(later - earlier)` in seconds, as a float, on SQLite and PostgreSQL."""

    type = Float()
    inherit_cache = True
    name = "threadline_seconds_between"


@compiles(seconds_between)
def _between_default(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(c, **kw) for c in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _at(now: datetime) -> ColumnElement[datetime]:
    if now.tzinfo is None:
        raise DomainError(f"naive datetime {now!r}: reports need a timezone-aware 'now'")
    return bindparam(None, now, type_=UTCDateTime())


# ----------------------------------------------------------------------------------------------------------
# The shared rules


def last_touch_expr() -> ColumnElement[datetime]:
    """A deal's last stage change or activity.

    max(stage_entered_at, coalesce(last_activity_at, created_at)), NULL-safe on both databases.
    """
    activity = func.coalesce(Deal.last_activity_at, Deal.created_at)
    return case((activity > Deal.stage_entered_at, activity), else_=Deal.stage_entered_at)


StageStallDays = Mapping[int, int | None]
"""Stage id -> that stage's own stall_days (None: the default applies); see `stage_stall_days`."""


def stage_stall_days(session: Session) -> dict[int, int | None]:
    """Every stage's own stall_days: pass it as `stages=` for the fast form of the stalled rule."""
    return {stage_id: days for stage_id, days in session.execute(select(Stage.id, Stage.stall_days))}


def stall_days_expr(default_stall_days: int, stages: StageStallDays | None = None) -> ColumnElement[int]:
    """The stall threshold in days that applies to a deal.

    Without `stages` it reads Stage.stall_days (the query must join Stage); with `stages` (every stage, from
    `stage_stall_days`) it is a CASE on Deal.stage_id and needs no join.
    """
    default = literal(default_stall_days, Integer)
    if stages is None:
        return func.coalesce(Stage.stall_days, default)
    if not stages:
        return default
    days = {sid: d if d is not None else default_stall_days for sid, d in stages.items()}
    return case(days, value=Deal.stage_id, else_=default)


def stalled_since_expr(
    default_stall_days: int, stages: StageStallDays | None = None
) -> ColumnElement[datetime]:
    """When a deal became (or will become) stalled: last touch + stall days."""
    return shifted_by_seconds(last_touch_expr(), stall_days_expr(default_stall_days, stages) * 86400)


def _threshold_expr(
    now: datetime, default_stall_days: int, stages: StageStallDays
) -> ColumnElement[datetime]:
    # per stage, the last-touch time at or before which its deals are stalled: the date math is done here in
    # Python once per stage instead of once per deal in SQL (a third of the query's time on SQLite)
    default = _at(now - timedelta(days=default_stall_days))
    if not stages:
        return default
    thresholds = {
        sid: _at(now - timedelta(days=d if d is not None else default_stall_days))
        for sid, d in stages.items()
    }
    return case(thresholds, value=Deal.stage_id, else_=default)


def stalled_condition(
    now: datetime, default_stall_days: int, *, stages: StageStallDays | None = None
) -> ColumnElement[bool]:
    """The stalled rule as a WHERE clause: open, and last touch + stall days <= now.

    Without `stages` the query must join Stage on Deal.stage_id == Stage.id and the date math runs per row.
    With `stages=stage_stall_days(session)` (all stages) it needs no join and is about three times faster on
    SQLite; both forms select exactly the same deals (tests/models/test_reports.py checks it).
    """
    if stages is None:
        return and_(Deal.status == DealStatus.OPEN, stalled_since_expr(default_stall_days) <= _at(now))
    return and_(
        Deal.status == DealStatus.OPEN, last_touch_expr() <= _threshold_expr(now, default_stall_days, stages)
    )


def stalled_deals_query(
    *, now: datetime, default_stall_days: int, stages: StageStallDays | None = None
) -> Select[int, datetime, int, datetime]:
    """One row per stalled deal, most stalled (earliest stalled_since) first.

    Columns: deal_id, last_touch_at, stall_days, stalled_since. Deal and Stage are in the FROM: join more
    (User, Company) or filter (Stage.alerts_excluded, Deal.alerts_muted, Deal.owner_id) on top of it.
    Pass `stages=stage_stall_days(session)` for the faster form (same rows, same order).
    """
    since = stalled_since_expr(default_stall_days, stages)
    if stages is None:
        order: ColumnElement[Any] = since
    else:
        # how long past its threshold a deal is, without per-row date formatting on SQLite
        order = seconds_between(_threshold_expr(now, default_stall_days, stages), last_touch_expr())
    return (
        select(
            Deal.id.label("deal_id"),
            last_touch_expr().label("last_touch_at"),
            stall_days_expr(default_stall_days, stages).label("stall_days"),
            since.label("stalled_since"),
        )
        .select_from(Deal)
        .join(Stage, Deal.stage_id == Stage.id)
        .where(stalled_condition(now, default_stall_days, stages=stages))
        .order_by(order, Deal.id)
    )


def contacted_condition(response: timedelta) -> ColumnElement[bool]:
    """EXISTS an outbound email, a call or a meeting with the contact up to `response` after its creation."""
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


def uncontacted_condition(
    *, now: datetime, created_since: datetime, response: timedelta
) -> ColumnElement[bool]:
    """Contacts created in [created_since, now - response] never contacted within `response` of creation."""
    return and_(
        Contact.created_at >= _at(created_since),
        Contact.created_at <= _at(now - response),
        ~contacted_condition(response),
    )


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

    Won and lost columns hold every deal in those stages (counts and totals over all of them; cards are the
    most recently active). `owner_id` keeps only that owner's deals. Raises NotFoundError for an unknown
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
    ]
    shown = union_all(*(select(top.c.deal_id) for top in per_stage)).subquery() if per_stage else None
    # the stalled badge is worked out for the shown cards only, not for every deal of the pipeline
    stalled = stalled_condition(now, default_stall_days, stages={s.id: s.stall_days for s in stages})
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
                days_in_stage=_whole_days(now - row[10]),
                stalled=bool(row[2]),
                last_touch_at=row[1],
                expected_close_on=row[11],
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
) -> Dashboard:
    """The sales dashboard's numbers (see Dashboard's fields for each definition).

    `tz` (an IANA name, e.g. the team's timezone) decides today's date and the month buckets of the forecast.
    `pipeline_id` restricts deal figures to one pipeline; `owner_id` restricts deal figures to that owner's
    deals, activities to that author and new contacts to that owner. Raises DomainError for an unknown tz.
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
    closed = _closed(session, scope=scope, since=now - timedelta(days=WIN_RATE_DAYS))
    activities, kinds = _activities_by_rep(
        session, since=now - timedelta(days=ACTIVITY_DAYS), now=now, author_id=owner_id
    )
    stalled, stalled_count = _stalled(session, scope=scope, now=now, default_stall_days=default_stall_days)
    waiting, waiting_count = _uncontacted(session, now=now, owner_id=owner_id)

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
        stalled=stalled,
        stalled_count=stalled_count,
        uncontacted=waiting,
        uncontacted_count=waiting_count,
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


def _whole_days(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 86400))


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
    recent = case((Deal.closed_at >= _at(since), 1), else_=0)
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
                        and_(Deal.status == DealStatus.WON, Deal.closed_at >= _at(since)),
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
            Activity.occurred_at > _at(since),
            Activity.occurred_at <= _at(now),
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


def _stalled(
    session: Session, *, scope: list[ColumnElement[bool]], now: datetime, default_stall_days: int
) -> tuple[list[StalledDeal], int]:
    stages = stage_stall_days(session)
    query = stalled_deals_query(now=now, default_stall_days=default_stall_days, stages=stages).where(*scope)
    # the total rides along on each of the top rows (a window over the matches): one pass instead of two
    top = query.add_columns(func.count().over().label("total")).limit(TOP_LIST).subquery()
    owner = aliased(User)
    rows = session.execute(
        select(
            top.c.last_touch_at,
            top.c.stall_days,
            top.c.stalled_since,
            Deal.id,
            Deal.title,
            Pipeline.name,
            Stage.name,
            Company.name,
            Deal.owner_id,
            owner.name,
            Deal.value,
            Deal.currency,
            top.c.total,
        )
        .join(Deal, Deal.id == top.c.deal_id)
        .join(Stage, Stage.id == Deal.stage_id)
        .join(Pipeline, Pipeline.id == Deal.pipeline_id)
        .outerjoin(Company, Company.id == Deal.company_id)
        .outerjoin(owner, owner.id == Deal.owner_id)
        .order_by(top.c.stalled_since, Deal.id)
    ).all()
    count = rows[0][12] if rows else 0
    stalled = [
        StalledDeal(
            deal_id=row[3],
            title=row[4],
            pipeline_name=row[5],
            stage_name=row[6],
            company_name=row[7],
            owner_id=row[8],
            owner_name=row[9],
            value=row[10],
            currency=row[11],
            last_touch_at=row[0],
            stall_days=int(row[1]),
            days_since_touch=_whole_days(now - row[0]),
            stalled_since=row[2],
        )
        for row in rows
    ]
    return stalled, int(count)


def _uncontacted(
    session: Session, *, now: datetime, owner_id: int | None
) -> tuple[list[WaitingContact], int]:
    where = [
        uncontacted_condition(
            now=now, created_since=now - timedelta(days=NEW_CONTACT_DAYS), response=NEW_CONTACT_RESPONSE
        )
    ]
    if owner_id is not None:
        where.append(Contact.owner_id == owner_id)
    # the anti-join runs once: the total rides along on each of the 20 rows (a window over the matches)
    top = (
        select(Contact.id.label("contact_id"), func.count().over().label("total"))
        .where(*where)
        .order_by(Contact.created_at, Contact.id)
        .limit(TOP_LIST)
        .subquery()
    )
    first_email = (
        select(ContactEmail.email)
        .where(ContactEmail.contact_id == Contact.id)
        .order_by(ContactEmail.id)
        .limit(1)
        .scalar_subquery()
    )
    owner = aliased(User)
    rows = session.execute(
        select(
            Contact.id,
            Contact.name,
            first_email,
            Company.name,
            Contact.owner_id,
            owner.name,
            Contact.created_at,
            top.c.total,
        )
        .select_from(top)
        .join(Contact, Contact.id == top.c.contact_id)
        .outerjoin(Company, Company.id == Contact.company_id)
        .outerjoin(owner, owner.id == Contact.owner_id)
        .order_by(Contact.created_at, Contact.id)
    ).all()
    count = rows[0][7] if rows else 0
    waiting = [
        WaitingContact(
            contact_id=row[0],
            name=row[1],
            email=row[2],
            company_name=row[3],
            owner_id=row[4],
            owner_name=row[5],
            created_at=row[6],
            days_waiting=_whole_days(now - row[6]),
        )
        for row in rows
    ]
    return waiting, int(count)
