"""The dashboard (the panel's home page): the numbers of models.reports.dashboard drawn as inline SVG bars.

Charts are rendered on the server as plain SVG rectangles with the numbers written beside them, so the page
needs no chart library, works offline and reads fine without JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import request
from sqlalchemy import select

from admin.context import db, now, settings
from admin.formatting import fmt_datetime, money_text
from admin.views.base import GuardedIndexView, expose
from models.reports import MoneyByCurrency, dashboard
from models.schema import Pipeline, User


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
    return "n/a" if rate is None else f"{rate * 100:.0f}%"


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
        report = dashboard(
            session,
            now=now(),
            tz=config.team.timezone,
            default_stall_days=config.alerts.stall_days,
            pipeline_id=pipeline_id,
            owner_id=owner_id,
        )
        currency = report.currencies[0] if report.currencies else None
        multi_pipeline = len({s.pipeline_id for s in report.open_by_stage}) > 1
        stage_bars = bars(
            [
                (
                    f"{s.pipeline_name} / {s.stage_name}" if multi_pipeline else s.stage_name,
                    main_amount(s.value, currency),
                    f"{s.count} deal(s), {money_text(s.value)} (weighted {money_text(s.weighted)})",
                )
                for s in report.open_by_stage
            ]
        )
        forecast_bars = bars(
            [
                (
                    b.label,
                    main_amount(b.weighted, currency),
                    f"{b.count} deal(s), weighted {money_text(b.weighted)}",
                )
                for b in report.forecast
            ]
        )
        activity_bars = bars(
            [
                (
                    r.name,
                    r.total,
                    f"{r.total} (" + ", ".join(f"{n} {k.value}" for k, n in r.counts.items() if n) + ")",
                )
                for r in report.activities_by_rep
            ]
        )
        win = report.win_rate_90d
        return self.page(
            "threadline/dashboard.html",
            report=report,
            pipelines=pipelines,
            users=users,
            pipeline_id=pipeline_id,
            owner_id=owner_id,
            stage_bars=stage_bars,
            forecast_bars=forecast_bars,
            activity_bars=activity_bars,
            win_rate=percent(win.rate),
            win_detail=f"{win.won} won / {win.closed} closed",
            win_rate_all=percent(report.win_rate_all_time.rate),
            average_size=money_text(report.average_deal_size_90d) if report.average_deal_size_90d else "n/a",
            average_cycle=(
                f"{report.average_cycle_days_90d:.1f} days"
                if report.average_cycle_days_90d is not None
                else "n/a"
            ),
            open_total=money_text(report.open_total),
            open_weighted=money_text(report.open_weighted),
            fmt_datetime=fmt_datetime,
            money_text=money_text,
        )
