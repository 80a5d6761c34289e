"""Webhook subscriptions in the panel (admins): subscribe a URL, see each one's state, the reason it was
paused, how many events wait; resume or remove it. A new subscription's signing secret is shown once."""

from __future__ import annotations

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, settings
from admin.formatting import fmt_datetime
from admin.views.base import AdminOnlyView, expose
from models.errors import DomainError
from models.schema import WebhookSubscription
from models.secrets import secret_box
from models.webhooks import EVENT_TYPES, pending_counts, resume, subscribe


class WebhooksView(AdminOnlyView):
    def _page(self, *, secret: str | None = None, status: int = 200) -> tuple[str, int]:
        session = db()
        rows = session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id.desc())).all()
        html = self.page(
            "threadline/api/webhooks.html",
            rows=rows,
            pending=pending_counts(session),
            event_types=EVENT_TYPES,
            secret=secret,
            fmt_datetime=fmt_datetime,
        )
        return html, status

    @expose("/")
    def index(self) -> tuple[str, int]:
        return self._page()

    @expose("/create", methods=("POST",))
    def create(self) -> tuple[str, int]:
        session = db()
        try:
            _, secret = subscribe(
                session, target_url=request.form.get("target_url", ""), events=request.form.getlist("events"),
                box=secret_box(settings().secrets), now=now(), by=permissions.user(),
            )  # fmt: skip
        except DomainError as exc:
            session.rollback()
            flash(str(exc), "danger")
            return self._page(status=422)
        session.commit()
        flash("Subscribed. Give the receiver this signing secret now: it is not shown again.", "success")
        return self._page(secret=secret)

    def _subscription(self, subscription_id: int) -> WebhookSubscription:
        subscription = db().get(WebhookSubscription, subscription_id)
        if subscription is None:
            abort(404)
        return subscription

    @expose("/<int:subscription_id>/resume", methods=("POST",))
    def resume(self, subscription_id: int) -> BaseResponse:
        resume(db(), self._subscription(subscription_id), now=now())
        db().commit()
        flash("Resumed: the waiting events go out now.", "success")
        return redirect(url_for("webhook_subscriptions.index"))

    @expose("/<int:subscription_id>/delete", methods=("POST",))
    def delete(self, subscription_id: int) -> BaseResponse:
        db().delete(self._subscription(subscription_id))
        db().commit()
        flash("Subscription removed.", "success")
        return redirect(url_for("webhook_subscriptions.index"))
