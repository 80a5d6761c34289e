"""The board in a real Chromium: drag a card, the keyboard's Move dialog, dropping on Lost with a reason, a
refused move coming back with a message beside the card, and the board on a 390 px phone.

Screenshots land in test-output/ at the repository root.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from models.db import transaction
from models.deals import create_deal, default_pipeline, find_stage
from models.schema import Deal, DealStageChange, DealStatus, User
from models.users import create_user
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR
from tests.fixtures.factories import NOW

REP_EMAIL, REP_PASSWORD = "rita@team.example", "rita's long password"


def seed(live) -> dict[str, int]:
    """Four deals for the admin, one for a rep; returns deal ids by title."""
    with transaction(live.db.sessions) as session:
        boss = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        rita = create_user(session, REP_EMAIL, name="Rita Rep", role="rep", password=REP_PASSWORD, now=NOW)
        pipeline = default_pipeline(session)
        ids = {}
        for title, stage, owner, value in (
            ("Acme rollout", "Qualified", boss, "12500.40"),
            ("Globex renewal", "Qualified", boss, "3000"),
            ("Initech pilot", "Demo", boss, "800"),
            ("Umbrella upsell", "Proposal", boss, "45000"),
            ("Hooli seats", "Qualified", rita, "2000"),
        ):
            deal = create_deal(
                session,
                title=title,
                now=NOW,
                stage=find_stage(pipeline, stage),
                value=Decimal(value),
                owner=owner,
            )
            ids[title] = deal.id
    return ids


def log_in(page, base: str, email: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_url(lambda url: url.startswith(f"{base}/admin/"))  # my day or the page asked for


def stage_history(live, deal_id: int) -> list[str]:
    with live.db.sessions() as session:
        changes = session.scalars(
            select(DealStageChange).where(DealStageChange.deal_id == deal_id).order_by(DealStageChange.id)
        ).all()
        return [c.to_stage.name for c in changes if c.to_stage is not None]


def test_drag_keyboard_and_lost_on_the_board(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    ids = seed(live_server)
    log_in(page, base, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(f"{base}/admin/board/")
    page.evaluate("window.__sameDocument = true")
    qualified = page.locator('.tl-column[data-stage-name="Qualified"]')
    demo = page.locator('.tl-column[data-stage-name="Demo"]')
    acme = page.locator(f"#deal-{ids['Acme rollout']}")
    assert qualified.locator(".tl-count").inner_text() == "3"
    assert acme.locator(".tl-card-value").inner_text() == "$12,500"
    assert acme.locator(".tl-initials").inner_text() == "BB"
    assert acme.locator(".tl-next").inner_text() == "No next step"
    page.screenshot(path=str(OUTPUT_DIR / "board-desktop.png"), full_page=True)

    # drag: the card lands in Demo, the totals follow, no page load
    acme.drag_to(demo.locator(".tl-cards"))
    expect(demo.locator(".tl-count")).to_have_text("2")
    expect(page.locator("#board-status")).to_have_text("Acme rollout moved to Demo.")
    assert qualified.locator(".tl-count").inner_text() == "2"
    assert demo.locator(".tl-total").inner_text() == "$13,300"
    assert demo.locator(f"#deal-{ids['Acme rollout']}").count() == 1
    assert stage_history(live_server, ids["Acme rollout"]) == ["Qualified", "Demo"]

    # the keyboard: focus the card's Move button, Enter opens the dialog, arrows pick the stage, Enter moves
    page.focus(f"#deal-{ids['Globex renewal']} .tl-card-menu")
    page.keyboard.press("Enter")
    expect(page.locator("#move-dialog")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "move-stage-" + str(
        page.get_attribute('.tl-column[data-stage-name="Qualified"]', "data-stage-id")
    )
    page.keyboard.press("ArrowDown")  # Demo
    page.keyboard.press("ArrowDown")  # Proposal
    page.keyboard.press("Enter")
    expect(page.locator("#move-dialog")).to_be_hidden()
    proposal = page.locator('.tl-column[data-stage-name="Proposal"]')
    expect(proposal.locator(".tl-count")).to_have_text("2")
    assert proposal.locator(f"#deal-{ids['Globex renewal']}").count() == 1
    # focus goes back to the moved card's button
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Move Globex renewal"
    assert stage_history(live_server, ids["Globex renewal"]) == ["Qualified", "Proposal"]

    # drop on Lost: the reason is asked, the card leaves the board, the Lost zone counts it
    lost = page.locator('.tl-dropzone[data-stage-name="Lost"]')
    assert lost.locator(".tl-count").inner_text() == "0"
    page.locator(f"#deal-{ids['Initech pilot']}").drag_to(lost)
    expect(page.locator("#move-dialog")).to_be_visible()
    assert page.inner_text("#move-dialog-title") == "Why was Initech pilot lost?"
    page.screenshot(path=str(OUTPUT_DIR / "board-lost-reason.png"))
    page.fill("#lost-reason", "Chose a competitor")
    page.click("#move-submit")
    expect(lost.locator(".tl-count")).to_have_text("1")
    assert page.locator(f"#deal-{ids['Initech pilot']}").count() == 0
    with live_server.db.sessions() as session:
        initech = session.get(Deal, ids["Initech pilot"])
        assert (initech.status, initech.lost_reason) == (DealStatus.LOST, "Chose a competitor")

    # cancelling the reason leaves the deal where it was
    page.locator(f"#deal-{ids['Umbrella upsell']}").drag_to(lost)
    page.click("#move-cancel")
    assert proposal.locator(f"#deal-{ids['Umbrella upsell']}").count() == 1
    assert lost.locator(".tl-count").inner_text() == "1"

    # a refused move goes back, with the message beside the card and in view
    with transaction(live_server.db.sessions) as session:
        session.get(Deal, ids["Umbrella upsell"]).pipeline.stages  # noqa: B018 (loads the stages)
    page.evaluate(
        """id => { const card = document.getElementById('deal-' + id);
                   card.setAttribute('data-deal-id', '999999'); }""",
        ids["Umbrella upsell"],
    )
    umbrella = page.locator(f"#deal-{ids['Umbrella upsell']}")
    umbrella.drag_to(page.locator('.tl-column[data-stage-name="Negotiation"] .tl-cards'))
    expect(umbrella.locator(".tl-card-error")).to_contain_text("no longer exists")
    assert proposal.locator(f"#deal-{ids['Umbrella upsell']}").count() == 1
    toast = page.locator("#board-status")
    expect(toast).to_contain_text("Umbrella upsell was not moved.")
    box = toast.bounding_box()
    assert box is not None and 0 <= box["y"] <= page.viewport_size["height"] - box["height"]
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(OUTPUT_DIR / "board-refused.png"))


def test_a_rep_on_a_phone_sees_their_board_without_sideways_scrolling(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    ids = seed(live_server)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, base, REP_EMAIL, REP_PASSWORD)
    page.goto(f"{base}/admin/board/")
    # a rep's own deals by default
    expect(page.locator(f"#deal-{ids['Hooli seats']}")).to_be_visible()
    assert page.locator(f"#deal-{ids['Acme rollout']}").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("document.body.scrollWidth") <= 390
    # the first column fits the screen; the others are a swipe away inside the board
    column = page.locator('.tl-column[data-stage-name="Qualified"]').bounding_box()
    assert column is not None and column["x"] >= 0 and column["x"] + column["width"] <= 390
    closers = page.locator("#board-closers").bounding_box()
    assert closers is not None and closers["x"] + closers["width"] <= 390
    page.screenshot(path=str(OUTPUT_DIR / "board-390px.png"), full_page=True)
    # moving works from the phone with the Move dialog
    page.click(f"#deal-{ids['Hooli seats']} .tl-card-menu")
    page.check("#move-dialog >> text=Demo")
    page.click("#move-submit")
    expect(page.locator('.tl-column[data-stage-name="Demo"] .tl-count')).to_have_text("1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # switching to everyone applies at once (no Show button)
    page.select_option("#owner", label="Everyone")
    page.wait_for_url(f"{base}/admin/board/?pipeline=*&owner=all")
    expect(page.locator(f"#deal-{ids['Acme rollout']}")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
