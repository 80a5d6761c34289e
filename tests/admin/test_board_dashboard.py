"""The pipeline board (moves, totals, card limits) and the dashboard's numbers on a small known dataset."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from admin.views import board as board_module
from models.activities import log_activity
from models.deals import move_deal_to_stage
from models.schema import DealStageChange, Role
from tests.admin.conftest import fresh, sqlite_only
from tests.fixtures.factories import NOW, stage_named


def column_of(html: str, stage: str) -> str:
    """The HTML of one board column (or drop zone), up to the next one."""
    start = html.index(f'data-stage-name="{stage}"')
    following = html.find("data-stage-name=", start + 1)
    return html[start : following if following > 0 else len(html)]


def column_numbers(html: str, stage: str) -> tuple[str, str, str]:
    column = column_of(html, stage)
    count = re.search(r'class="tl-count">(\d+)<', column)
    total = re.search(r'class="tl-total">([^<]*)<', column)
    weighted = re.search(r'class="tl-weighted">([^<]*)<', column)
    assert count and total and weighted, stage
    return count.group(1), total.group(1), weighted.group(1)


def test_board_move_updates_totals_and_records_history(app, session, make_user, make_deal, login):
    rep = make_user(role=Role.REP, name="Rita Rep")
    deal = make_deal(title="Acme rollout", owner=rep, value="1000")
    make_deal(title="Other", owner=rep, value="400")
    browser = login(rep)
    page = browser.get("/admin/board/").text
    assert column_numbers(page, "Qualified") == ("2", "$1,400", "$140")
    assert column_numbers(page, "Proposal") == ("0", "0", "0")
    assert f'id="deal-{deal.id}"' in page and "Rita Rep" in page

    proposal = stage_named(session, "Proposal")
    response = browser.post_json("/admin/board/move", {"deal_id": deal.id, "stage_id": proposal.id})
    assert response.status_code == 200
    data = response.json
    assert data["ok"] and data["changed"] and data["stage_name"] == "Proposal"
    totals = {c["stage_id"]: (c["count"], c["total"], c["weighted"]) for c in data["columns"]}
    assert totals[proposal.id] == (1, "$1,000", "$500")
    assert totals[stage_named(session, "Qualified").id] == (1, "$400", "$40")

    fresh(session)
    changes = session.scalars(
        select(DealStageChange).where(DealStageChange.deal_id == deal.id).order_by(DealStageChange.id)
    ).all()
    assert [(c.to_stage.name, c.changed_by_id) for c in changes] == [
        ("Qualified", None),
        ("Proposal", rep.id),
    ]
    history = browser.get(f"/admin/records/deal/{deal.id}").text
    assert re.search(r"<td>Qualified</td><td>Proposal</td><td>Rita Rep</td>", history)


@sqlite_only
def test_board_shows_a_limited_number_of_cards_and_links_to_the_rest(
    app, session, make_user, make_deal, login, monkeypatch
):
    monkeypatch.setattr(board_module, "CARDS_PER_COLUMN", 2)
    owner = make_user(role=Role.MANAGER)
    for n in range(3):
        make_deal(title=f"Bulk {n}", owner=owner, created_at=NOW - timedelta(days=n))
    make_deal(title="Elsewhere", stage="Demo", owner=owner)
    browser = login(owner)
    page = browser.get("/admin/board/").text
    assert len(re.findall(r'<article class="tl-card', page)) == 3  # two in Qualified, one in Demo
    more = re.search(r'class="small tl-more" href="([^"]+)"\s*>', page)
    assert more, "a '+ N more' link"
    assert '<span class="tl-more-count">1</span> more' in page
    listing = browser.get(more.group(1).replace("&amp;", "&")).text
    assert "Bulk 0" in listing and "Bulk 2" in listing and "Elsewhere" not in listing


@sqlite_only
def test_board_filters_by_owner(app, make_user, make_deal, login):
    ann, bob = make_user(role=Role.REP, name="Ann"), make_user(role=Role.REP, name="Bob")
    make_deal(title="Ann's deal", owner=ann)
    make_deal(title="Bob's deal", owner=bob)
    page = login(ann).get(f"/admin/board/?owner={bob.id}").text
    assert "Bob&#39;s deal" in page and "Ann&#39;s deal" not in page
    # Ann sees Bob's card but gets no move control on it
    assert 'draggable="true"' not in page and 'class="tl-card-menu"' not in page


def test_dashboard_numbers_on_a_known_dataset(app, session, make_user, make_deal, login):
    rep = make_user(role=Role.REP, name="Rita Rep")
    won, lost = stage_named(session, "Won"), stage_named(session, "Lost")
    closed_at = NOW - timedelta(days=10)
    first = make_deal(title="Won A", owner=rep, value="1000", created_at=NOW - timedelta(days=40))
    second = make_deal(title="Won B", owner=rep, value="3000", created_at=NOW - timedelta(days=20))
    third = make_deal(title="Lost C", owner=rep, value="5000", created_at=NOW - timedelta(days=20))
    for deal, stage in ((first, won), (second, won), (third, lost)):
        move_deal_to_stage(session, deal, stage, now=closed_at)
    make_deal(
        title="Open D",
        stage="Proposal",
        owner=rep,
        value="1000",
        created_at=NOW - timedelta(days=2),
        expected_close_on=(NOW + timedelta(days=20)).date(),
    )
    for day in (1, 2):
        log_activity(
            session,
            kind="call",
            occurred_at=NOW - timedelta(days=day),
            now=NOW,
            subject="Call",
            author=rep,
            deal=first,
        )
    session.commit()

    page = login(make_user(role=Role.MANAGER)).get("/admin/").text  # this month: November 2026
    assert re.search(r'id="period-title">November 2026<', page)
    assert re.search(r'id="kpi-conversion">67%<', page)
    assert re.search(r'id="kpi-won">\$4,000<', page) and "2 deals won, 1 lost" in page
    assert re.search(r'id="kpi-average-size">\$2,000<', page)
    assert re.search(r'id="kpi-open">\$1,000<', page)
    assert "1 deal, weighted $500" in page  # the forecast month of Open D (50% of 1,000)
    rita = page[page.index(f'data-user-id="{rep.id}"') :]
    assert re.search(r'class="text-right tl-rep-activities">2<', rita)
    assert "<svg" in page and "<rect" in page
