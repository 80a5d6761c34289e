"""The pipeline editor in a real Chromium: drag a stage to reorder, the keyboard's Up button, rename in place,
save; remove a stage that holds deals by choosing where they go. Screenshots land in test-output/."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from models.db import transaction
from models.deals import create_deal, default_pipeline, find_stage
from models.schema import Deal, DealStageChange, Pipeline
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR
from tests.e2e.test_board import log_in
from tests.fixtures.factories import NOW


def stage_names(live) -> list[str]:
    with live.db.sessions() as session:
        pipeline = session.scalar(select(Pipeline).order_by(Pipeline.id))
        return [s.name for s in pipeline.stages]


def test_reorder_rename_and_remove_stages(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    with transaction(live_server.db.sessions) as session:
        pipeline = default_pipeline(session)
        demo_deals = [
            create_deal(
                session,
                title=f"Demo deal {n}",
                now=NOW,
                stage=find_stage(pipeline, "Demo"),
                value=Decimal(100),
            )
            for n in range(2)
        ]
        deal_ids = [d.id for d in demo_deals]
    log_in(page, base, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(f"{base}/admin/pipelines/")
    assert "Empty" not in page.inner_text("body")
    rows = page.locator(".tl-stage-row")
    assert [rows.nth(i).locator(".tl-stage-name").input_value() for i in range(rows.count())] == [
        "Qualified", "Demo", "Proposal", "Negotiation", "Won", "Lost",
    ]  # fmt: skip

    # drag Negotiation above Demo by its handle
    negotiation = page.locator('.tl-stage-row:has(input[value="Negotiation"])')
    demo = page.locator('.tl-stage-row:has(input[value="Demo"])')
    negotiation.locator(".tl-handle").drag_to(demo, target_position={"x": 10, "y": 3})
    expect(page.locator(".tl-unsaved").first).to_be_visible()
    # the keyboard: focus Proposal's Up button and press Enter (Proposal goes above Demo too)
    page.focus('button[aria-label="Move Proposal up"]')
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Move Proposal up"
    # rename in place and set the numbers
    page.fill('.tl-stage-row:has(input[value="Qualified"]) .tl-stage-name', "Lead in")
    page.fill(f"#stage-{find_id(live_server, 'Demo')}-probability", "35")
    page.fill(f"#stage-{find_id(live_server, 'Demo')}-stall_days", "4")
    page.screenshot(path=str(OUTPUT_DIR / "pipelines-editing.png"), full_page=True)
    page.click(".tl-save")
    expect(page.locator(".alert-success")).to_contain_text("Sales saved.")
    assert stage_names(live_server) == ["Lead in", "Negotiation", "Proposal", "Demo", "Won", "Lost"]
    with live_server.db.sessions() as session:
        demo_stage = session.get(Deal, deal_ids[0]).stage
        assert (demo_stage.probability, demo_stage.stall_days) == (35, 4)

    # remove Demo, which holds two deals: the page asks where they go
    page.click('.tl-stage-row:has(input[value="Demo"]) .tl-remove')
    expect(page.locator("#remove-stage-deals")).to_contain_text("Demo holds 2 deals. Where should they go?")
    page.select_option("#move-to", label="Proposal")
    page.screenshot(path=str(OUTPUT_DIR / "pipelines-remove-stage.png"))
    page.click("#remove-stage-submit")
    expect(page.locator(".alert-success")).to_contain_text(
        "Stage Demo removed; its 2 deal(s) moved to Proposal."
    )
    assert stage_names(live_server) == ["Lead in", "Negotiation", "Proposal", "Won", "Lost"]
    with live_server.db.sessions() as session:
        for deal_id in deal_ids:
            assert session.get(Deal, deal_id).stage.name == "Proposal"
            history = session.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal_id)).all()
            assert len(history) == 2 and history[-1].to_stage.name == "Proposal"
            assert history[-1].changed_by is not None and history[-1].changed_by.email == ADMIN_EMAIL


def find_id(live, name: str) -> int:
    with live.db.sessions() as session:
        pipeline = session.scalar(select(Pipeline).order_by(Pipeline.id))
        return next(s.id for s in pipeline.stages if s.name == name)
