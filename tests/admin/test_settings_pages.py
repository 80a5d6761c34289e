"""Admin configuration from the browser (users, stages), alerts in the navbar, CSV export."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from models.schema import Notification, Role, User
from models.users import verify_password
from tests.admin.conftest import fresh, sqlite_only
from tests.fixtures.factories import NOW


@sqlite_only
def test_admin_adds_a_user_whose_password_is_hashed_and_never_shown(app, session, make_user, login):
    admin = login(make_user(role=Role.ADMIN))
    response = admin.post(
        "/admin/user/new/",
        {
            "email": "New.Rep@Team.example",
            "name": "Nina New",
            "role": "rep",
            "new_password": "s3cret-enough",
            "active": "y",
        },
    )
    assert response.status_code == 302
    fresh(session)
    user = session.scalar(select(User).where(User.email == "new.rep@team.example"))
    assert user is not None and user.role == Role.REP and user.password_hash.startswith("$argon2")
    assert verify_password(user, "s3cret-enough")
    for url in ("/admin/user/", f"/admin/user/edit/?id={user.id}"):
        page = admin.get(url).text
        assert "$argon2" not in page and "s3cret-enough" not in page
    short = admin.post(
        "/admin/user/new/", {"email": "x@team.example", "name": "X", "role": "rep", "new_password": "short"}
    )
    assert "at least 8 characters" in short.text


@sqlite_only
def test_a_user_name_with_a_line_break_is_refused_when_added_or_renamed(app, session, make_user, login):
    admin = login(make_user(role=Role.ADMIN))
    hostile = "Eve\r\nBcc: evil@attacker.example"
    added = admin.post(
        "/admin/user/new/",
        {"email": "eve@team.example", "name": hostile, "role": "rep", "new_password": "s3cret-enough"},
    )
    assert "a name cannot contain a line break" in added.text
    rep = make_user(email="rita@team.example", name="Rita")
    renamed = admin.post(
        f"/admin/user/edit/?id={rep.id}",
        {"email": rep.email, "name": hostile, "role": "rep", "active": "y", "alerts_enabled": "y"},
    )
    assert "a name cannot contain a line break" in renamed.text
    fresh(session)
    assert session.scalar(select(User).where(User.email == "eve@team.example")) is None
    assert session.scalar(select(User.name).where(User.id == rep.id)) == "Rita"


@sqlite_only
def test_unread_alerts_show_in_the_navbar_and_can_be_marked_read(app, session, make_user, make_deal, login):
    rep = make_user(role=Role.REP)
    deal = make_deal(title="Quiet deal", owner=rep)
    for n in range(2):
        session.add(
            Notification(
                key=f"stalled:{deal.id}:{n}",
                kind="stalled",
                user_id=rep.id,
                deal_id=deal.id,
                title=f"Quiet deal has stalled ({n})",
                detail={},
                created_at=NOW,
            )
        )
    session.commit()
    browser = login(rep)
    assert '<span class="badge badge-warning" id="tl-unread">2</span>' in browser.get("/admin/").text
    page = browser.get("/admin/notifications/").text
    assert "Quiet deal has stalled (0)" in page and f"/admin/records/deal/{deal.id}" in page
    browser.post("/admin/notifications/read")
    assert 'id="tl-unread">0<' in browser.get("/admin/").text
    # another user's alerts are not theirs to see
    other = login(make_user(role=Role.REP))
    assert "Quiet deal has stalled" not in other.get("/admin/notifications/").text


@sqlite_only
def test_deal_list_exports_csv(app, make_user, make_deal, login):
    owner = make_user(role=Role.REP, email="owner@team.example")
    make_deal(title="Exported, with comma", owner=owner, value="1234.5")
    response = login(owner).get("/admin/deal/export/csv/")
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0]["Title"] == "Exported, with comma"
    assert rows[0]["Owner"] == "owner@team.example" and rows[0]["Stage"] == "Qualified"
    assert rows[0]["Value"] == "1234.50"
