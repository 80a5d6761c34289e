"""The dashboard (the panel's home page): where the pipeline stands now, and what happened in a period.

The open pipeline, forecast, stalled deals and waiting leads come from models.reports.dashboard; the period's
figures (won and lost, conversion and won value by lead source, average deal size, per rep activities, won
value and target) from models.reports.performance, which also owns what a target means. Admins set targets
for the period on the same page. Charts are plain SVG bars drawn on the server with the numbers beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, settings, team_tz
from admin.formatting import days_text, money, money_text, relative
from admin.views.base import GuardedIndexView, commit, expose
from models.deals import parse_money
from models.errors import DomainError
from models.money import DEFAULT_CURRENCY, normalize_currency
from models.reports import NO_SOURCE, MoneyByCurrency, Period, dashboard, performance, period_of, set_target
from models.schema import Pipeline, Role, User

PERIOD_LABELS = {"month": "This month", "quarter": "This quarter", "year": "This year", "custom": "Custom"}


@dataclass(frozen=True)
class Bar:
    label: str
    width: float
    """0..100, percent of the widest bar."""
    text: str
    href: str | None = None


def bars(items: list[tuple[str, Decimal | float | int, str]], href: Any = None) -> list[Bar]:
    """Bars scaled to the largest value; `items` are (label, value, text shown beside the bar)."""
    top = max((float(v) for _, v, _ in items), default=0.0)
    return [
        Bar(label=label, width=(float(value) / top * 100 if top > 0 else 0.0), text=text)
        for label, value, text in items
    ]


def main_amount(amounts: MoneyByCurrency, currency: str | None) -> Decimal:
    """The bar length: the amount in the dashboard's main currency (other currencies are listed in text)."""
    if currency is None:
        return Decimal(0)
    return amounts.get(currency, Decimal(0))


def percent(rate: float | None) -> str:
    return "\u2013" if rate is None else f"{rate * 100:.0f}%"


def deals_text(count: int) -> str:
    return f"{count} deal" if count == 1 else f"{count} deals"


def parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise DomainError(f"{value!r} is not a date (use YYYY-MM-DD)") from None


def chosen_period(values: Any) -> Period:
    """The period asked for in the query (or form); this month when none. Bad input: this month, with why."""
    today = now().astimezone(team_tz()).date()
    kind = values.get("period") or "month"
    try:
        anchor = parse_day(values.get("at")) or today  # another month, quarter or year than the current one
        return period_of(
            kind, today=anchor, starts_on=parse_day(values.get("from")), last_day=parse_day(values.get("to"))
        )
    except DomainError as exc:
        flash(f"Showing this month: {exc}.", "error")
        return period_of("month", today=today)


def period_args(period: Period) -> dict[str, str]:
    args = {"period": period.kind}
    if period.kind == "custom":
        args.update({"from": period.starts_on.isoformat(), "to": period.last_day.isoformat()})
    elif not period.starts_on <= now().astimezone(team_tz()).date() < period.ends_on:
        args["at"] = period.starts_on.isoformat()
    return args


def neighbour_url(period: Period, step: int) -> str | None:
    """The previous (-1) or next (+1) month, quarter or year, keeping the other filters."""
    if period.kind == "custom":
        return None
    anchor = period.starts_on - timedelta(days=1) if step < 0 else period.ends_on
    neighbour = period_of(period.kind, today=anchor)
    args: dict[str, Any] = {k: v for k, v in request.args.items() if k not in ("period", "at", "from", "to")}
    args.update(period_args(neighbour))
    return url_for("admin.index", **args)


def period_text(period: Period) -> str:
    first, last = period.starts_on, period.last_day
    if period.kind == "month":
        return f"{first:%B %Y}"
    if period.kind == "quarter":
        return f"Q{(first.month - 1) // 3 + 1} {first.year}"
    if period.kind == "year":
        return str(first.year)
    return f"{first:%d %b %Y} to {last:%d %b %Y}"


class DashboardView(GuardedIndexView):
    @expose("/")
    def index(self) -> str:
        config = settings()
        session = db()
        pipelines = list(session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)))
        users = list(session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)))
        pipeline_id = request.args.get("pipeline", type=int)
        owner_id = request.args.get("owner", type=int)
        if pipeline_id is not None and pipeline_id not in {p.id for p in pipelines}:
            pipeline_id = None
        if owner_id is not None and owner_id not in {u.id for u in users}:
            owner_id = None
        period = chosen_period(request.args)
        report = dashboard(
            session,
            now=now(),
            tz=config.team.timezone,
            default_stall_days=config.alerts.stall_days,
            pipeline_id=pipeline_id,
            owner_id=owner_id,
            recent=False,  # the period's figures come from performance()
        )
        result = performance(
            session, period=period, tz=config.team.timezone, pipeline_id=pipeline_id, owner_id=owner_id
        )
        currency = report.currencies[0] if report.currencies else None
        multi_pipeline = len({s.pipeline_id for s in report.open_by_stage}) > 1
        stage_bars = bars(
            [
                (
                    f"{s.pipeline_name}: {s.stage_name}" if multi_pipeline else s.stage_name,
                    main_amount(s.value, currency),
                    f"{deals_text(s.count)}, {money_text(s.value)} (weighted {money_text(s.weighted)})",
                )
                for s in report.open_by_stage
            ]
        )
        forecast_bars = bars(
            [
                (
                    b.label,
                    main_amount(b.weighted, currency),
                    f"{deals_text(b.count)}, weighted {money_text(b.weighted)}",
                )
                for b in report.forecast
            ]
        )
        return self.page(
            "threadline/dashboard.html",
            report=report,
            result=result,
            period=period,
            period_labels=PERIOD_LABELS,
            period_text=period_text(period),
            period_args=period_args(period),
            previous_url=neighbour_url(period, -1),
            next_url=neighbour_url(period, +1),
            pipelines=pipelines,
            users=users,
            pipeline_id=pipeline_id,
            owner_id=owner_id,
            stage_bars=stage_bars,
            forecast_bars=forecast_bars,
            conversion=percent(result.conversion),
            won_value=money_text(result.won_value),
            average_size=money_text(result.average_deal_size) if result.average_deal_size else "\u2013",
            open_total=money_text(report.open_total),
            open_weighted=money_text(report.open_weighted),
            no_source=NO_SOURCE,
            percent=percent,
            deals_text=deals_text,
            days_text=days_text,
            money=money,
            money_text=money_text,
            relative=relative,
            may_set_targets=permissions.is_admin() and period.kind != "custom",
            target_currency=next(
                (r.target_currency for r in result.reps if r.target_currency), currency or DEFAULT_CURRENCY
            ),
        )

    @expose("/targets", methods=("POST",))
    def targets(self) -> BaseResponse:
        """Admins set each rep's target for the period shown (a blank amount removes it)."""
        if not permissions.is_admin():
            abort(403)
        session = db()
        period = chosen_period(request.form)
        args: dict[str, Any] = period_args(period)
        back = redirect(url_for("admin.index", **args))
        if period.kind == "custom":
            flash("Targets are set for a month, a quarter or a year.", "error")
            return back
        reps = list(
            session.scalars(
                select(User).where(User.active.is_(True), User.role.in_((Role.REP, Role.MANAGER)))
            )
        )
        admin_user = permissions.user()

        def save(s: Any) -> int:
            currency = normalize_currency(request.form.get("currency"))
            changed = 0
            for rep in reps:
                field = f"target-{rep.id}"
                if field not in request.form:
                    continue
                raw = request.form[field].strip()
                try:
                    amount = parse_money(raw) if raw else None
                except DomainError as exc:
                    raise DomainError(f"{rep.name}: {exc}") from None
                set_target(
                    s, user=rep, period=period, amount=amount, currency=currency, now=now(), by=admin_user
                )
                changed += 1
            return changed

        if commit(save, failure="Targets not saved: ") is not None:
            flash(f"Targets for {period_text(period)} saved.", "success")
        return back
