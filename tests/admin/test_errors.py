"""Errors stay inside the panel: forbidden, not found and server errors show the layout, one sentence and a
way back (JSON for scripts); the favicon is served locally."""

from __future__ import annotations

import re

from flask import Flask

from models.schema import Role
from tests.admin.conftest import csrf_from, sqlite_only


def assert_panel_error(html: str, status: int, sentence: str, back: str) -> None:
    assert f'id="tl-error" data-status="{status}"' in html
    assert sentence in html
    assert re.search(rf'<a class="btn btn-primary" href="{re.escape(back)}" id="tl-error-back">', html), html
    assert "Werkzeug" not in html and "Traceback" not in html


@sqlite_only
def test_forbidden_and_not_found_render_inside_the_layout(app, make_user, login):
    rep = login(make_user(role=Role.REP, name="Rita"))
    forbidden = rep.get("/admin/user/")
    assert forbidden.status_code == 403
    assert_panel_error(forbidden.text, 403, "Your role does not let you open or change this.", "/admin/")
    assert 'id="tl-whoami"' in forbidden.text and "/admin/deal/" in forbidden.text  # the layout: navbar, menu

    for url in ("/admin/no-such-page", "/admin/records/deal/987654"):
        missing = rep.get(url)
        assert missing.status_code == 404, url
        assert_panel_error(missing.text, 404, "There is nothing at this address", "/admin/")


@sqlite_only
def test_flask_admins_own_aborts_use_the_panel_page_too(app, make_user, login):
    rep = login(make_user(role=Role.REP))
    response = rep.get("/admin/deal/ajax/lookup/?name=nope&query=x", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert_panel_error(response.text, 404, "There is nothing at this address", "/admin/")


@sqlite_only
def test_logged_out_visitors_are_offered_the_login_page(app):
    response = app.test_client().get("/nothing/here")
    assert response.status_code == 404
    assert_panel_error(response.text, 404, "There is nothing at this address", "/login")


@sqlite_only
def test_a_refused_form_and_a_wrong_method_explain_themselves(app, make_user, login):
    rep = login(make_user(role=Role.REP))
    refused = rep.client.post("/admin/notifications/read", data={"csrf_token": "forged"})
    assert refused.status_code == 400
    assert_panel_error(refused.text, 400, "reload the page and try again", "/admin/")
    wrong = rep.get("/logout")
    assert wrong.status_code == 405 and set(wrong.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert_panel_error(wrong.text, 405, "does not take that kind of request", "/admin/")


@sqlite_only
def test_scripts_asking_for_json_get_json_errors(app, make_user, login):
    rep = login(make_user(role=Role.REP))
    response = rep.get("/admin/user/", headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.json == {"ok": False, "error": "Your role does not let you open or change this."}


@sqlite_only
def test_a_server_error_renders_inside_the_layout_and_changes_nothing(app: Flask, session, make_user, login):
    from sqlalchemy import select

    from admin.context import db
    from models.schema import User

    rep_user = make_user(role=Role.REP, name="Before")

    @app.route("/admin/explode")
    def explode() -> str:  # a view that writes, then fails before committing
        row = db().get(User, rep_user.id)
        assert row is not None
        row.name = "Half-written"
        db().flush()
        raise RuntimeError("boom")

    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the handler answers
    rep = login(rep_user)
    response = rep.get("/admin/explode")
    assert response.status_code == 500
    assert_panel_error(response.text, 500, "The panel hit an error and logged it", "/admin/")
    assert "boom" not in response.text
    session.rollback()
    assert session.scalar(select(User.name).where(User.id == rep_user.id)) == "Before"
    assert rep.get("/admin/").status_code == 200  # the next request works normally


@sqlite_only
def test_the_favicon_is_served_locally_and_linked_from_every_page(app, make_user, login):
    client = app.test_client()
    with client.get("/favicon.ico") as icon:
        assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/vnd.microsoft.icon"
        assert icon.data[:4] == b"\x00\x00\x01\x00"  # an ICO file
    with client.get("/admin/threadline-static/favicon.svg") as svg:
        assert svg.status_code == 200 and b"<svg" in svg.data
    login_page = client.get("/login").text
    csrf_from(login_page)
    pages = [login_page, login(make_user(role=Role.REP)).get("/admin/").text]
    for html in pages:
        assert '<link rel="icon" href="/admin/threadline-static/favicon.svg" type="image/svg+xml">' in html
        assert '<link rel="icon" href="/favicon.ico" sizes="32x32">' in html


@sqlite_only
def test_when_the_layout_cannot_be_drawn_a_bare_page_still_says_what_happened(app, session, make_user, login):
    from sqlalchemy import text

    rep = login(make_user(role=Role.REP))
    session.execute(text("DROP TABLE notifications"))  # the navbar's alert count can no longer be read
    session.commit()
    response = rep.get("/admin/no-such-page")
    assert response.status_code == 404
    assert "There is nothing at this address" in response.text
    assert '<a href="/admin/">Back to the dashboard</a>' in response.text
    assert "Traceback" not in response.text
