"""Each user's alerts: the list, marking them read (models.notifications.mark_read), and the unread count
the navigation bar shows on every page."""

from __future__ import annotations

from flask import flash, g, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now
from admin.formatting import fmt_datetime, relative
from admin.views.base import GuardedView, expose
from models.notifications import mark_read, unread_count
from models.schema import Notification

LIST_LIMIT = 200


def unread_notifications() -> int:
    """The logged-in user's unread alerts (counted once per request)."""
    if not current_user.is_authenticated:
        return 0
    if "unread_notifications" not in g:
        g.unread_notifications = unread_count(db(), current_user.id)
    return int(g.unread_notifications)


class NotificationsView(GuardedView):
    def is_visible(self) -> bool:
        return False

    @expose("/")
    def index(self) -> str:
        rows = (
            db()
            .scalars(
                select(Notification)
                .where(Notification.user_id == permissions.user().id)
                .options(
                    joinedload(Notification.deal),
                    joinedload(Notification.contact),
                    joinedload(Notification.task),
                )
                .order_by(Notification.created_at.desc())
                .limit(LIST_LIMIT)
            )
            .all()
        )
        return self.page(
            "threadline/notifications.html", rows=rows, fmt_datetime=fmt_datetime, relative=relative
        )

    @expose("/read", methods=("POST",))
    def mark_read(self) -> BaseResponse:
        session = db()
        only = request.form.get("id", "")
        count = mark_read(
            session, permissions.user(), now=now(), notification_id=int(only) if only.isdigit() else None
        )
        session.commit()
        flash(f"{count} notification(s) marked read.", "success")
        return redirect(url_for(".index"))
