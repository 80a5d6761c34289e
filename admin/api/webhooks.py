"""/api/v1/webhooks: REST-hook subscriptions (Zapier's subscribe and unsubscribe)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import select

from admin.api.auth import api_user, is_manager_or_admin
from admin.api.lists import record_or_404
from admin.api.problems import ApiProblem
from admin.api.writes import IDEMPOTENCY_DOC, committed
from admin.context import db, now, settings
from models.errors import DomainError
from models.schema import WebhookSubscription
from models.secrets import secret_box
from models.webhooks import EVENT_TYPES, subscribe

webhooks = Blueprint(
    "webhooks", __name__, url_prefix="/api/v1/webhooks", description="Event subscriptions (REST hooks)"
)


class SubscriptionIn(ma.Schema):
    class Meta:
        unknown = RAISE

    target_url = fields.Url(required=True, schemes={"http", "https"}, metadata={"description": "https"})
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True, validate=validate.Length(min=1)
    )


class SubscriptionOut(ma.Schema):
    class Meta:
        ordered = True

    id = fields.Integer(required=True)
    target_url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    created_at = fields.AwareDateTime(required=True)
    paused_at = fields.AwareDateTime(allow_none=True)
    paused_reason = fields.String(allow_none=True)


class NewSubscriptionOut(SubscriptionOut):
    secret = fields.String(
        required=True, metadata={"description": "signing secret, shown only in this answer"}
    )


def _visible(subscription: WebhookSubscription) -> WebhookSubscription:
    """A rep sees and removes their own subscriptions; managers and admins everyone's."""
    if not is_manager_or_admin() and subscription.created_by_id != api_user().id:
        raise ApiProblem(404, f"WebhookSubscription {subscription.id} does not exist.")
    return subscription


@webhooks.route("")
class Subscriptions(MethodView):
    @webhooks.response(200, SubscriptionOut(many=True))
    def get(self) -> list[WebhookSubscription]:
        """List subscriptions"""
        query = select(WebhookSubscription).order_by(WebhookSubscription.id.desc())
        if not is_manager_or_admin():
            query = query.where(WebhookSubscription.created_by_id == api_user().id)
        return list(db().scalars(query))

    @committed
    @webhooks.doc(**IDEMPOTENCY_DOC)
    @webhooks.arguments(SubscriptionIn)
    @webhooks.response(201, NewSubscriptionOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Subscribe a URL to events; the answer holds the signing secret, once"""
        try:
            subscription, secret = subscribe(
                db(), target_url=body["target_url"], events=body["events"],
                box=secret_box(settings().secrets), now=now(), by=api_user(),
            )  # fmt: skip
        except DomainError as exc:
            raise ApiProblem(422, str(exc), field="target_url") from None
        subscription.secret = secret  # type: ignore[attr-defined]  # for this answer only, never stored
        return (
            subscription,
            201,
            {"Location": url_for("webhooks.SubscriptionById", subscription_id=subscription.id)},
        )


@webhooks.route("/<int:subscription_id>")
class SubscriptionById(MethodView):
    @webhooks.response(200, SubscriptionOut)
    def get(self, subscription_id: int) -> WebhookSubscription:
        """One subscription"""
        return _visible(record_or_404(WebhookSubscription, subscription_id))

    @committed
    @webhooks.response(204)
    def delete(self, subscription_id: int) -> None:
        """Unsubscribe (undelivered events of it are dropped)"""
        db().delete(_visible(record_or_404(WebhookSubscription, subscription_id)))
        db().flush()
