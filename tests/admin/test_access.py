"""Who may see and do what: login on every page, roles enforced by the server, CSRF, login throttling."""

from __future__ import annotations

import os
import re
import stat

from sqlalchemy import select

from admin.app import load_or_create_secret_key
from models.schema import Deal, DealStageChange, Role
from tests.admin.conftest import PASSWORD, csrf_from, fresh, log_in, sqlite_only
from tests.fixtures.factories import stage_named

ADMIN_ONLY = ("/admin/user/", "/admin/user/new/", "/admin/pipelines/", "/admin/sync/")


@sqlite_only
def test_every_admin_url_sends_logged_out_visitors_to_login(app, make_user, make_deal):
    deal = make_deal()
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin") or rule.endpoint.endswith("static"):
            continue
        values = {arg: ("deal" if arg == "kind" else deal.id) for arg in rule.arguments}
        url = rule.rule
        for arg, value in values.items():
            url = re.sub(rf"<(?:\w+:)?{arg}>", str(value), url)
        if "GET" in rule.methods:
            response = client.get(url)
            assert response.status_code == 302, url
            assert response.headers["Location"].startswith("/login?next="), url
        else:
            # a logged-out POST has no session token either: refused before any view code runs
            response = client.post(url, data={"deal_id": deal.id, "stage_id": 1})
            assert response.status_code in (400, 302), url
        checked += 1
    assert checked > 40  # the model views' list/new/edit/export/ajax pages plus board, records, sync, alerts
    assert client.get("/login").status_code == 200


@sqlite_only
def test_rep_cannot_reach_admin_pages_and_menu_hides_them(app, make_user, login):
    rep = login(make_user(role=Role.REP))
    for url in ADMIN_ONLY:
        assert rep.get(url).status_code == 403, url
    home = rep.get("/admin/").text
    assert "/admin/user/" not in home and "/admin/sync/" not in home
    admin = login(make_user(role=Role.ADMIN))
    for url in ADMIN_ONLY:
        assert admin.get(url).status_code == 200, url
    assert "/admin/user/" in admin.get("/admin/").text


def test_rep_cannot_edit_or_move_another_reps_deal(app, session, make_user, make_deal, login):
    mine_owner, other_owner = make_user(role=Role.REP), make_user(role=Role.REP)
    theirs = make_deal(title="Their deal", owner=other_owner, value="500")
    mine = make_deal(title="My deal", owner=mine_owner)
    rep = login(mine_owner)
    demo = stage_named(session, "Demo")

    assert rep.get(f"/admin/deal/edit/?id={theirs.id}").status_code == 403
    edit = rep.post(
        f"/admin/deal/edit/?id={theirs.id}", {"title": "Hijacked", "value": "1", "currency": "USD"}
    )
    assert edit.status_code == 403
    moved = rep.post_json("/admin/board/move", {"deal_id": theirs.id, "stage_id": demo.id})
    assert moved.status_code == 403 and moved.json == {
        "ok": False,
        "error": "You can only move your own deals.",
    }
    assert rep.post(f"/admin/records/deal/{theirs.id}/move", {"stage_id": demo.id}).status_code == 403
    assert rep.post("/admin/deal/delete/", {"id": theirs.id}).status_code == 403

    fresh(session)
    unchanged = session.get(Deal, theirs.id)
    assert (unchanged.title, unchanged.stage.name, str(unchanged.value)) == (
        "Their deal",
        "Qualified",
        "500.00",
    )
    assert (
        len(session.scalars(select(DealStageChange).where(DealStageChange.deal_id == theirs.id)).all()) == 1
    )

    # their own deal: editable, and the list offers edit buttons only on it
    assert rep.get(f"/admin/deal/edit/?id={mine.id}").status_code == 200
    listing = rep.get("/admin/deal/").text
    assert f"/admin/deal/edit/?id={mine.id}" in listing
    assert f"/admin/deal/edit/?id={theirs.id}" not in listing


@sqlite_only
def test_rep_creates_records_owned_by_themselves(app, session, make_user, login):
    rep_user, other = make_user(role=Role.REP), make_user(role=Role.REP)
    rep = login(rep_user)
    form = rep.get("/admin/deal/new/").text
    assert 'name="owner"' not in form  # a rep cannot pick another owner
    response = rep.post(
        "/admin/deal/new/",
        {
            "title": "Self-made",
            "value": "1,200.50",
            "currency": "eur",
            "first_stage": "",
            "owner": str(other.id),
        },
    )
    assert response.status_code == 302, re.findall(
        r"(?s)alert-.{0,300}|invalid-feedback.{0,200}", response.text
    )
    deal = session.scalar(select(Deal).where(Deal.title == "Self-made"))
    assert deal is not None
    assert (deal.owner_id, str(deal.value), deal.currency, deal.stage.name) == (
        rep_user.id,
        "1200.50",
        "EUR",
        "Qualified",
    )


@sqlite_only
def test_manager_reassigns_owners_in_bulk(app, session, make_user, make_deal, login):
    old, new = make_user(role=Role.REP), make_user(role=Role.REP, name="New Owner")
    deals = [make_deal(owner=old) for _ in range(3)]
    manager = login(make_user(role=Role.MANAGER))
    ids = [str(d.id) for d in deals[:2]]
    step = manager.client.post(
        "/admin/deal/action/", data={"action": "reassign", "rowid": ids, "csrf_token": manager.token}
    )
    assert step.status_code == 302 and "/admin/deal/reassign/" in step.headers["Location"]
    page = manager.get(step.headers["Location"])
    assert "Reassign 2 records" in page.text
    done = manager.post("/admin/deal/reassign/", {"ids": ",".join(ids), "owner_id": str(new.id)})
    assert done.status_code == 302
    fresh(session)
    assert [session.get(Deal, d.id).owner_id for d in deals] == [new.id, new.id, old.id]
    # a rep gets no such action
    rep = login(old)
    assert "reassign" not in rep.get("/admin/deal/").text
    assert rep.post("/admin/deal/reassign/", {"ids": ids[0], "owner_id": str(old.id)}).status_code == 403


@sqlite_only
def test_post_without_csrf_token_is_refused(app, session, make_user, make_deal, login):
    user = make_user(role=Role.ADMIN)
    deal = make_deal(owner=user)
    browser = login(user)
    demo = stage_named(session, "Demo")
    no_token = browser.client.post(f"/admin/records/deal/{deal.id}/move", data={"stage_id": demo.id})
    assert no_token.status_code == 400
    no_header = browser.client.post("/admin/board/move", json={"deal_id": deal.id, "stage_id": demo.id})
    assert no_header.status_code == 400
    forged = browser.client.post(
        "/admin/deal/new/", data={"title": "x", "value": "1", "csrf_token": "forged"}
    )
    assert forged.status_code == 400
    fresh(session)
    assert session.get(Deal, deal.id).stage.name == "Qualified"
    assert session.scalar(select(Deal).where(Deal.title == "x")) is None


@sqlite_only
def test_failed_logins_lock_the_account_out_for_that_address(app, make_user):
    user = make_user(role=Role.REP)
    client = app.test_client()
    for _ in range(5):
        assert log_in(client, user.email, "wrong password!").status_code == 401
    locked = log_in(client, user.email, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed logins: try again in 30 seconds" in locked.text
    assert client.get("/admin/").status_code == 302  # still logged out
    # another account from the same address is not affected
    other = make_user(role=Role.REP)
    assert log_in(app.test_client(), other.email).status_code == 302


@sqlite_only
def test_inactive_users_and_foreign_next_urls_are_refused(app, make_user):
    gone = make_user(role=Role.REP, active=False)
    client = app.test_client()
    response = log_in(client, gone.email)
    assert response.status_code == 401 and "Wrong email or password" in response.text
    user = make_user(role=Role.REP)
    page = client.get("/login?next=https://evil.example/")
    response = client.post(
        "/login",
        data={
            "email": user.email,
            "password": PASSWORD,
            "csrf_token": csrf_from(page.text),
            "next": "https://evil.example/",
        },
    )
    assert response.status_code == 302 and response.headers["Location"] == "/admin/day/"
    session_cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("threadline_session=")
    )
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie


@sqlite_only
def test_pages_load_no_remote_assets(app, make_user, make_deal, login):
    user = make_user(role=Role.ADMIN)
    make_deal(owner=user)
    browser = login(user)
    pages = [
        "/admin/",
        "/admin/board/",
        "/admin/deal/",
        "/admin/deal/new/",
        "/admin/contact/",
        "/admin/sync/",
    ]
    for url in [*pages, "/login"]:
        html = (browser if url != "/login" else app.test_client()).get(url).text
        remote = re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="((?:https?:)?//[^"]*)"', html)
        assert remote == [], (url, remote)
        assert "fonts.googleapis" not in html


def test_logout_needs_a_post_and_ends_the_session(app, make_user, login):
    browser = login(make_user(role=Role.REP))
    assert browser.get("/logout").status_code == 405
    assert browser.post("/logout").status_code == 302
    assert browser.get("/admin/").status_code == 302


def test_secret_key_is_made_once_and_private(tmp_path):
    path = tmp_path / ".threadline-secret"
    first = load_or_create_secret_key(path)
    assert load_or_create_secret_key(path) == first and len(first) >= 48
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
