"""REST-hook subscriptions through the API (as Zapier makes them): subscribe, list, unsubscribe."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import func, select

from admin.app import create_app
from models.apikeys import create_api_key
from models.schema import Role, WebhookEvent
from models.secrets import generate_key
from settings import Secret, SecretsSettings
from tests.admin.conftest import settings_for
from tests.api.conftest import ApiClient, fields_of, problem
from tests.fixtures.factories import NOW


@pytest.fixture
def keyed(db, session):  # type: ignore[no-untyped-def]
    settings = replace(settings_for(db.url), secrets=SecretsSettings(key=Secret(generate_key(), "test")))
    app = create_app(settings, db.sessions, clock=lambda: NOW)

    def make(user):  # type: ignore[no-untyped-def]
        token = create_api_key(session, user, name="zap", now=NOW).token
        session.commit()
        return ApiClient(app.test_client(), token, user)

    return make


def test_subscribe_list_and_unsubscribe(keyed, make_user, session):
    rep = make_user(role=Role.REP)
    api = keyed(rep)
    made = api.post(
        "/api/v1/webhooks", {"target_url": "https://hooks.example.com/catch/1", "events": ["deal.created"]}
    )
    assert made.status_code == 201, made.text
    body = made.get_json()
    assert body["secret"].startswith("whsec_") and body["events"] == ["deal.created"]
    listed = api.get("/api/v1/webhooks").get_json()
    assert [s["id"] for s in listed] == [body["id"]] and "secret" not in listed[0]
    other = keyed(make_user(role=Role.REP))
    assert other.get("/api/v1/webhooks").get_json() == []
    assert other.delete(f"/api/v1/webhooks/{body['id']}").status_code == 404
    deal = api.post("/api/v1/deals", {"title": "Zapier sees this"})
    assert deal.status_code == 201
    assert session.scalar(select(func.count(WebhookEvent.id))) == 1
    assert api.delete(f"/api/v1/webhooks/{body['id']}").status_code == 204
    assert api.get("/api/v1/webhooks").get_json() == []


def test_bad_subscriptions_name_the_field(keyed, make_user):
    api = keyed(make_user(role=Role.ADMIN))
    plain = api.post(
        "/api/v1/webhooks", {"target_url": "http://hooks.example.com/x", "events": ["deal.created"]}
    )
    assert plain.status_code == 422 and fields_of(problem(plain)) == {"target_url"}
    wrong = api.post(
        "/api/v1/webhooks", {"target_url": "https://h.example.com/x", "events": ["deal.exploded"]}
    )
    assert wrong.status_code == 422 and "events.0" in fields_of(problem(wrong))


def test_without_a_secrets_key_subscribing_says_what_to_configure(make_user, api_client):
    api = api_client(make_user(role=Role.ADMIN))
    response = api.post("/api/v1/webhooks", {"target_url": "https://h.example.com/x", "events": ["deal.won"]})
    assert response.status_code == 422 and "[secrets]" in problem(response)["detail"]
