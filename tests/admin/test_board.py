"""The board as people use it: compact cards, a rep's own deals by default, won and lost as drop zones,
moves through the stage history with CSRF and role checks, and a lost reason kept."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from models.schema import Deal, DealStageChange, DealStatus, Role, Task
from tests.admin.conftest import fresh, sqlite_only
from tests.fixtures.factories import NOW, stage_named


def card_of(html: str, deal: Deal) -> str:
    start = html.rindex("<article", 0, html.index(f'id="deal-{deal.id}"'))
    return html[start : html.index("</article>", start)]


@sqlite_only
def test_a_card_shows_value_without_cents_owner_initials_days_next_step_and_stalled(
    app, session, make_user, make_company, make_deal, login
):
    rita = make_user(role=Role.REP, name="Rita Moreno")
    acme = make_company("Acme Corp")
    planned = make_deal(title="Acme rollout", owner=rita, company=acme, value="12500.40")
    planned.stage_entered_at = NOW - timedelta(days=3)
    planned.last_activity_at = NOW - timedelta(days=1)
    session.add(Task(title="Call Jane", deal=planned, due_at=NOW - timedelta(days=2), created_at=NOW))
    session.add(Task(title="Send contract", deal=planned, due_at=NOW + timedelta(days=5), created_at=NOW))
    quiet = make_deal(title="Quiet one", owner=rita, value="900", created_at=NOW - timedelta(days=40))
    session.commit()

    page = login(rita).get("/admin/board/").text
    card = card_of(page, planned)
    assert "Acme Corp" in card and "$12,500<" in card and ".40" not in card
    assert re.search(r'class="tl-initials" title="Owner: Rita Moreno">RM<', card)
    assert "3 days" in card
    # the earliest open task is the next step, overdue: red on the card
    assert "tl-step-overdue" in card and "Call Jane · 2 days ago" in card and "Send contract" not in card
    assert "Stalled" not in card
    other = card_of(page, quiet)
    assert "tl-step-none" in other and "No next step" in other
    assert ">Stalled<" in other  # 40 days untouched, past the 14-day default
    for raw in ("open", "None", "day(s)", "12,500.40"):
        assert f">{raw}<" not in page


@sqlite_only
def test_a_rep_sees_their_own_deals_by_default_and_can_pick_everyone(app, make_user, make_deal, login):
    ann, bob = make_user(role=Role.REP, name="Ann"), make_user(role=Role.REP, name="Bob")
    make_deal(title="Ann deal", owner=ann)
    make_deal(title="Bob deal", owner=bob)
    rep = login(ann)
    mine = rep.get("/admin/board/").text
    assert "Ann deal" in mine and "Bob deal" not in mine
    assert re.search(rf'<option value="{ann.id}" selected>Me \(Ann\)</option>', mine)
    everyone = rep.get("/admin/board/?owner=all").text
    assert "Ann deal" in everyone and "Bob deal" in everyone
    # a manager sees the whole team by default
    team = login(make_user(role=Role.MANAGER)).get("/admin/board/").text
    assert "Ann deal" in team and "Bob deal" in team


@sqlite_only
def test_won_and_lost_are_drop_zones_with_counts_not_columns(app, session, make_user, make_deal, login):
    boss = make_user(role=Role.MANAGER)
    for n in range(3):
        make_deal(title=f"Closed {n}", stage="Won", owner=boss, value="1000")
    make_deal(title="Gone", stage="Lost", owner=boss)
    make_deal(title="Live", owner=boss)
    page = login(boss).get("/admin/board/").text
    assert "Closed 0" not in page and "Gone" not in page and "Live" in page
    won, lost = column_of_zone(page, "Won"), column_of_zone(page, "Lost")
    assert 'class="tl-dropzone tl-kind-won"' in won and 'class="tl-count">3<' in won and "$3,000" in won
    assert 'class="tl-count">1<' in lost
    assert page.count('class="tl-column"') == 4  # the four open stages


def column_of_zone(html: str, name: str) -> str:
    start = html.rindex(
        'class="tl-dropzone', 0, html.index(f'data-stage-name="{name}"', html.index("tl-closers"))
    )
    return html[start : html.index("</div>", start)]


def test_dropping_on_lost_keeps_the_reason_and_the_history(app, session, make_user, make_deal, login):
    rep = make_user(role=Role.REP, name="Rita Rep")
    deal = make_deal(title="Acme rollout", owner=rep, value="1000")
    lost = stage_named(session, "Lost")
    browser = login(rep)
    response = browser.post_json(
        "/admin/board/move",
        {"deal_id": deal.id, "stage_id": lost.id, "lost_reason": " Went with a competitor "},
    )
    assert response.status_code == 200 and response.json["ok"] and response.json["stage_kind"] == "lost"
    zone = {c["stage_id"]: c for c in response.json["columns"]}[lost.id]
    assert (zone["count"], zone["total"]) == (1, "$1,000")
    fresh(session)
    moved = session.get(Deal, deal.id)
    assert (moved.status, moved.lost_reason) == (DealStatus.LOST, "Went with a competitor")
    history = session.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal.id)).all()
    assert [(h.to_stage.name, h.changed_by_id) for h in history] == [("Qualified", None), ("Lost", rep.id)]
    page = browser.get("/admin/board/").text
    assert 'class="tl-count">1<' in column_of_zone(page, "Lost") and "Acme rollout" not in page


@sqlite_only
def test_a_move_needs_the_csrf_token_and_the_right_role(app, session, make_user, make_deal, login):
    ann, bob = make_user(role=Role.REP, name="Ann"), make_user(role=Role.REP, name="Bob")
    theirs = make_deal(title="Bob deal", owner=bob)
    demo = stage_named(session, "Demo")
    rep = login(ann)
    no_token = rep.client.post("/admin/board/move", json={"deal_id": theirs.id, "stage_id": demo.id})
    assert no_token.status_code == 400
    refused = rep.post_json("/admin/board/move", {"deal_id": theirs.id, "stage_id": demo.id})
    assert refused.status_code == 403 and refused.json["error"] == "You can only move your own deals."
    nonsense = rep.post_json("/admin/board/move", {"deal_id": "x", "stage_id": demo.id})
    assert nonsense.status_code == 400 and "Traceback" not in nonsense.text
    fresh(session)
    assert session.get(Deal, theirs.id).stage.name == "Qualified"
    # the same move by a manager, as a plain form post (the no-script way): done, back to the board
    manager = login(make_user(role=Role.MANAGER))
    done = manager.post("/admin/board/move", {"deal_id": theirs.id, "stage_id": demo.id})
    assert done.status_code == 302
    fresh(session)
    assert session.get(Deal, theirs.id).stage.name == "Demo"
