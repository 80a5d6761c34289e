"""End to end in a real Chromium: my day (done in one click), quick add landing on the new record, and the
header's search driven by the keyboard alone. Screenshots land in test-output/ at the repository root."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from models.activities import create_task
from models.contacts import create_company, create_contact
from models.db import transaction
from models.deals import create_deal
from models.schema import Activity, ActivityKind, Task, User
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR


def log_in(page, base: str) -> None:
    page.goto(f"{base}/")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login-submit")


def test_my_day_is_the_home_page_and_done_is_one_click(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    with transaction(live_server.db.sessions) as session:
        boss = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        now = live_server_now()
        acme = create_company(session, name="Acme Corp", now=now, domains=["acme.example"])
        deal = create_deal(session, title="Acme rollout", now=now, company=acme, owner=boss)
        create_task(session, title="Call Jane about the rollout", now=now, kind="call",
                    due_at=now - timedelta(days=1), assignee=boss, deal=deal)  # fmt: skip
        create_task(
            session, title="Send the contract", now=now, due_at=now + timedelta(minutes=30), assignee=boss
        )
        deal_id = deal.id
    log_in(page, base)
    page.wait_for_url(f"{base}/admin/day/")
    overdue = page.locator("#overdue")
    expect(overdue).to_contain_text("Call Jane about the rollout")
    expect(overdue).to_contain_text("Acme rollout")
    expect(page.locator("#today")).to_contain_text("Send the contract")
    page.screenshot(path=str(OUTPUT_DIR / "my-day.png"), full_page=True)

    page.click("#overdue .tl-done")
    page.wait_for_url(f"{base}/admin/day/")
    expect(page.locator("#overdue")).to_contain_text("Nothing overdue.")
    expect(page.locator(".alert")).to_contain_text("Done: Call Jane about the rollout")
    with live_server.db.sessions() as session:
        call = session.scalar(select(Activity).where(Activity.deal_id == deal_id))
        assert call is not None and (call.kind, call.subject) == (
            ActivityKind.CALL,
            "Call Jane about the rollout",
        )
        assert (
            session.scalar(select(Task.done_at).where(Task.title == "Call Jane about the rollout"))
            is not None
        )
    # the deal now has nothing planned: its page says so
    page.goto(f"{base}/admin/records/deal/{deal_id}")
    expect(page.locator("#no-next-step")).to_be_visible()
    expect(page.locator("#timeline")).to_contain_text("Call Jane about the rollout")


def test_quick_add_from_the_header_lands_on_the_new_record(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    log_in(page, base)
    page.wait_for_url(f"{base}/admin/day/")
    page.click("#tl-new summary")
    page.click("#tl-new-contact")
    page.wait_for_url(f"{base}/admin/quick/contact")
    page.fill("#f-name", "Nora New")
    page.fill("#f-emails", "nora@initech.example")
    page.fill("#f-company", "Initech")  # a new company, created with the contact
    page.screenshot(path=str(OUTPUT_DIR / "quick-add-contact.png"), full_page=True)
    page.click("#quick-save")
    page.wait_for_url(re.compile(r".*/admin/records/contact/\d+$"))
    expect(page.locator("#record-title")).to_have_text("Nora New")
    expect(page.locator("dl")).to_contain_text("Initech")

    # plan the next step from the contact's page, then add a deal from it
    page.fill("#task-form input[name=title]", "Intro call")
    page.click("#task-form button[type=submit]")
    expect(page.locator("#tasks")).to_contain_text("Intro call")
    page.click("#add-deal")
    expect(page.locator("#f-company")).to_have_value("Initech")
    page.fill("#f-title", "Initech pilot")
    page.click("#quick-save")
    page.wait_for_url(re.compile(r".*/admin/records/deal/\d+$"))
    expect(page.locator("#record-title")).to_have_text("Initech pilot")
    expect(page.locator("dl")).to_contain_text("Nora New")
    page.screenshot(path=str(OUTPUT_DIR / "quick-add-deal-landed.png"), full_page=True)


def test_search_everywhere_by_keyboard_only(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    with transaction(live_server.db.sessions) as session:
        now = live_server_now()
        acme = create_company(session, name="Acme Robotics", now=now, domains=["acme-robotics.example"])
        create_contact(
            session, name="Patricia Smithers", now=now, emails=["pat@acme-robotics.example"], company=acme
        )
        create_deal(session, title="Robotics arm upgrade", now=now, company=acme)
    log_in(page, base)
    page.wait_for_url(f"{base}/admin/day/")
    page.keyboard.press("/")  # focuses the header's box
    page.keyboard.type("robotics")
    results = page.locator("#tl-search-results")
    expect(results).to_be_visible()
    expect(results).to_contain_text("Companies")
    expect(results).to_contain_text("Acme Robotics")
    expect(results).to_contain_text("Robotics arm upgrade")
    page.screenshot(path=str(OUTPUT_DIR / "search-box.png"))
    # the first answer is the contact (whose company matches), then the company
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator("#tl-search-results .tl-active")).to_contain_text("Acme Robotics")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/admin/records/company/\d+$"))
    expect(page.locator("#record-title")).to_have_text("Acme Robotics")

    # Enter with nothing chosen: the full results page, grouped
    page.keyboard.press("/")
    page.keyboard.type("smith")
    expect(page.locator("#tl-search-results")).to_contain_text("Patricia Smithers")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/admin/search/\?q=smith$"))
    expect(page.locator("#search-results")).to_contain_text("Patricia Smithers")
    page.keyboard.press("Escape")


def live_server_now():
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)
