"""In a real Chromium, the panel works under its Content-Security-Policy (no inline script runs, so every
behaviour Flask-Admin put in inline handlers must come from the panel's own files): filters, bulk actions,
the delete confirmation, one-click task completion, and the error page's way back. The browser reports no
policy violation on the way."""

from __future__ import annotations

import re

from sqlalchemy import select

from models.activities import create_task
from models.db import transaction
from models.deals import create_deal
from models.schema import Deal, Task, User
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR
from tests.fixtures.factories import NOW


def test_the_panel_works_under_its_content_security_policy(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.on("pageerror", lambda exc: violations.append(f"page error: {exc}"))
    with transaction(live_server.db.sessions) as session:
        boss = session.scalar(select(User).where(User.email == ADMIN_EMAIL))
        for title in ("Keep me", "Delete me"):
            create_deal(session, title=title, now=NOW, owner=boss)
        create_task(session, title="Send the contract", now=NOW, assignee=boss)

    page.goto(f"{base}/login")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(f"{base}/admin/day/")  # a login lands on my day

    # a filter added from the "Add Filter" menu (Flask-Admin's filters.js, no inline handler)
    page.goto(f"{base}/admin/deal/")
    page.click("text=Add Filter")
    page.click(".field-filters a.filter:has-text('Status')")
    expect(page.locator("#filter_form")).to_contain_text("Status")
    expect(page.locator("#filter_form button[type=submit]").first).to_be_visible()
    assert page.url.endswith("/admin/deal/")  # the menu link was not followed

    # a bulk action from "With selected"
    keep = page.locator("tr", has_text="Keep me")
    keep.locator("input.action-checkbox").check()
    page.click("text=With selected")
    page.click("a[data-tl-action='reassign']")
    page.wait_for_url(re.compile(r".*/admin/deal/reassign/\?ids=\d+$"))
    expect(page.locator("h2")).to_have_text("Reassign 1 record")

    # the delete button asks first: dismissed, nothing is deleted; accepted, the deal is gone
    page.goto(f"{base}/admin/deal/")
    answers = iter([False, True])
    asked: list[str] = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept() if next(answers) else dialog.dismiss()

    page.on("dialog", answer)
    delete_button = page.locator("tr", has_text="Delete me").locator("button.tl-delete")
    delete_button.click()
    page.wait_for_timeout(300)
    assert page.locator("tr", has_text="Delete me").count() == 1
    delete_button.click()
    page.wait_for_url(re.compile(r".*/admin/deal/.*"))
    expect(page.locator("tr", has_text="Delete me")).to_have_count(0)
    assert asked == ["Are you sure you want to delete this record?"] * 2
    with live_server.db.sessions() as session:
        assert session.scalars(select(Deal.title)).all() == ["Keep me"]

    # one click marks a task done, and the list comes back
    page.goto(f"{base}/admin/task/")
    page.click("button.tl-done")
    page.wait_for_url(f"{base}/admin/task/")
    expect(page.locator(".alert")).to_contain_text("Done: Send the contract")
    expect(page.locator("button.tl-done")).to_have_count(0)
    with live_server.db.sessions() as session:
        task = session.scalar(select(Task))
        assert task is not None and task.done_at is not None

    # a wrong address: the panel's page, and its way back
    page.goto(f"{base}/admin/no-such-page")
    expect(page.locator("#tl-error h1")).to_have_text("Not found")
    page.screenshot(path=str(OUTPUT_DIR / "not-found.png"), full_page=True)
    page.click("#tl-error-back")
    page.wait_for_url(lambda url: url.startswith(f"{base}/admin/"))  # my day or the page asked for

    assert violations == []
