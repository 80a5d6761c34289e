"""My day: a rep's home page (models.agenda.my_day); a manager or admin can switch to the whole team's.

Overdue first, then today, then the next days, each with its record and a one-click *Done* (a CSRF-protected
POST to the record pages' completion endpoint, which logs it on the record's timeline and comes back here);
then stalled deals, deals without a next step, leads waiting for a first answer and the latest emails on the
rep's records (subjects only: no body or snippet reaches this page).
"""

from __future__ import annotations

from datetime import timedelta

from flask import request

from admin import permissions
from admin.context import db, now, settings
from admin.formatting import fmt_datetime, fmt_due, fmt_money
from admin.views.base import GuardedView, expose
from models.activities import KIND_WORDS
from models.agenda import my_day


class MyDayView(GuardedView):
    @expose("/")
    def index(self) -> str:
        config = settings()
        me = permissions.user()
        team = request.args.get("team") == "1" and permissions.is_manager_or_admin()
        day = my_day(
            db(),
            user_id=None if team else me.id,
            now=now(),
            tz=config.team.timezone,
            default_stall_days=config.alerts.stall_days,
            lead_window=timedelta(days=config.alerts.lead_window_days),
            lead_response=timedelta(hours=config.alerts.lead_response_hours),
        )
        return self.page(
            "threadline/my_day.html",
            day=day,
            team=team,
            me=me,
            may_switch=permissions.is_manager_or_admin(),
            kind_words=KIND_WORDS,
            back=request.full_path if request.query_string else request.path,
            fmt_due=fmt_due,
            fmt_datetime=fmt_datetime,
            fmt_money=fmt_money,
        )
