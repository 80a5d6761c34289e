"""API keys: made in the panel and the CLI, shown once, stored hashed, last use recorded, revocation, the
user's role and state, no cookie authentication, and the per-key rate limit."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from flask import Flask
from sqlalchemy import select

from admin.app import create_app
from models.apikeys import create_api_key
from models.schema import ApiKey, Role
from settings import ApiSettings
from tests.admin.conftest import fresh, settings_for
from tests.api.conftest import problem
from tests.fixtures.factories import NOW

TOKEN = re.compile(r'id="new-key-token" value="(tl_[A-Za-z0-9_-]+)"')


def test_a_key_made_in_the_panel_is_shown_once_stored_hashed_and_works(app, login, make_user, session):
    rep = make_user("ann@team.example", role=Role.REP)
    browser = login(rep)
    page = browser.post("/admin/api-keys/create", {"name": "Website"})
    assert page.status_code == 200
    token = TOKEN.search(page.text).group(1)
    key = session.scalar(select(ApiKey))
    assert key.name == "Website" and key.user_id == rep.id
    assert key.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(key.__dict__.values()) and token not in browser.get("/admin/api-keys/").text
    assert key.last_used_at is None

    response = app.test_client().get("/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    fresh(session)
    assert session.get(ApiKey, key.id).last_used_at == NOW
    listing = browser.get("/admin/api-keys/").text
    assert "Website" in listing and f"tl_{key.prefix}" in listing and "Active" in listing


def test_revoking_a_key_stops_it_at_once(app, login, make_user, api_client, session):
    rep = make_user(role=Role.REP)
    api = api_client(rep)
    assert api.get("/api/v1/contacts").status_code == 200
    key = session.scalar(select(ApiKey))
    response = login(rep).post(f"/admin/api-keys/{key.id}/revoke")
    assert response.status_code == 302
    refused = api.get("/api/v1/contacts")
    assert refused.status_code == 401
    assert "revoked" in problem(refused)["detail"]
    assert "Revoked" in login(rep).get("/admin/api-keys/").text


def test_a_rep_cannot_revoke_or_make_someone_elses_key(login, make_user, api_client, session):
    owner = make_user(role=Role.REP)
    other = make_user(role=Role.REP)
    api_client(owner)
    key = session.scalar(select(ApiKey))
    assert login(other).post(f"/admin/api-keys/{key.id}/revoke").status_code == 403
    assert login(other).post("/admin/api-keys/create", {"name": "x", "user": owner.email}).status_code == 403
    assert "tests" not in login(other).get("/admin/api-keys/").text


def test_an_admin_makes_a_key_for_someone_else_that_acts_with_their_role(app, login, make_user, session):
    admin = make_user(role=Role.ADMIN)
    rep = make_user("rep-k@team.example", role=Role.REP)
    page = login(admin).post("/admin/api-keys/create", {"name": "Zapier", "user": rep.email})
    token = TOKEN.search(page.text).group(1)
    me = app.test_client().get("/api/v1/users/" + str(rep.id), headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    key = session.scalar(select(ApiKey))
    assert key.user_id == rep.id and key.created_by_id == admin.id


def test_a_key_without_a_name_is_refused_with_a_reason(login, make_user):
    page = login(make_user()).post("/admin/api-keys/create", {"name": "  "})
    assert page.status_code == 422 and "needs a name" in page.text


def test_missing_wrong_and_deactivated_keys_get_401_problems(app, make_user, api_client, session):
    client = app.test_client()
    missing = client.get("/api/v1/contacts")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert problem(missing)["errors"][0]["field"] == "Authorization"
    wrong = client.get("/api/v1/contacts", headers={"Authorization": "Bearer tl_not-a-key"})
    assert wrong.status_code == 401
    assert "tl_not-a-key" not in wrong.text
    rep = make_user()
    api = api_client(rep)
    rep.active = False
    session.commit()
    assert api.get("/api/v1/contacts").status_code == 401


def test_a_logged_in_browser_session_never_authenticates_the_api(login, make_user):
    browser = login(make_user(role=Role.ADMIN))
    assert browser.get("/api/v1/contacts").status_code == 401


def test_each_key_has_its_own_rate_limit(db, make_user, session):
    settings = replace(settings_for(db.url), api=ApiSettings(requests_per_minute=3))
    app: Flask = create_app(settings, db.sessions, clock=lambda: NOW)
    first = create_api_key(session, make_user(), name="a", now=NOW).token
    second = create_api_key(session, make_user(), name="b", now=NOW).token
    session.commit()
    client = app.test_client()
    answers = [client.get("/api/v1/users", headers={"Authorization": f"Bearer {first}"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert answers[2].headers["RateLimit-Remaining"] == "0"
    limited = problem(answers[3])
    assert int(answers[3].headers["Retry-After"]) >= 1 and "3 requests" in limited["detail"]
    assert client.get("/api/v1/users", headers={"Authorization": f"Bearer {second}"}).status_code == 200
