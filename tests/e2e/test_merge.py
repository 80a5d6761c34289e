"""The merge in a real Chromium: a likely duplicate on the Duplicates page, two rows ticked in the contact
list, the preview of what moves, the merge, and the kept contact's timeline; the old page leads to it.

Screenshots land in test-output/ (duplicates.png, merge-preview.png, merge-done.png).
"""

from __future__ import annotations

import re

from sqlalchemy import select

from models.activities import create_task
from models.db import transaction
from models.email_log import record_email
from models.messages import Direction, MessageRef, Placement
from models.schema import Contact, ContactEmail
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR
from tests.fixtures.emails import stored_email
from tests.fixtures.factories import NOW


def _seed(live) -> tuple[int, int]:
    with transaction(live.db.sessions) as session:
        keep = Contact(name="Jane Doe", created_at=NOW, phone=None)
        keep.emails.append(ContactEmail(email="jane.doe@gmail.com"))
        other = Contact(name="Jane D.", created_at=NOW, title="Head of Sales", phone="+1 555 0100")
        other.emails.append(ContactEmail(email="janedoe+crm@gmail.com"))
        session.add_all([keep, other])
        session.flush()
        for n, subject in enumerate(("Pricing for 50 seats", "Re: pricing, signed")):
            email = stored_email(
                content_key=f"merge-e2e-{n}", message_id=f"<merge-e2e-{n}@gmail.com>", subject=subject,
                sent_at=NOW, from_address="janedoe+crm@gmail.com", to_addresses=("boss@team.example",),
                text="Hello", html=None,
            )  # fmt: skip
            ref = MessageRef(mailbox="sales", folder="INBOX", uidvalidity=1, uid=n + 1)
            record_email(
                session, email, Placement(Direction.IN, link=("janedoe+crm@gmail.com",)), ref=ref, now=NOW
            )
        create_task(session, title="Send Jane the contract", now=NOW, contact=other)
        return keep.id, other.id


def test_merge_preview_and_merge_in_chromium(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    keep_id, other_id = _seed(live_server)
    page.goto(f"{base}/login")
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda url: url.startswith(f"{base}/admin/"))  # my day or the page asked for

    # the Duplicates page finds them (same Gmail address but for dots and +tag) and links to the preview
    page.click("a.nav-link:has-text('Duplicates')")
    page.click("#duplicate-rules a:has-text('Contacts: same address but for dots or +tag')")
    expect(page.locator("#duplicates-contacts")).to_contain_text("Same address but for dots or +tag")
    expect(page.locator("#duplicates-contacts")).to_contain_text("janedoe@gmail.com")
    page.screenshot(path=str(OUTPUT_DIR / "duplicates.png"), full_page=True)
    page.click("a.tl-merge-preview:has-text('Review merge of Jane D. into Jane Doe')")
    page.wait_for_url(re.compile(rf".*/admin/merge/contacts/preview\?keep={keep_id}&other={other_id}$"))

    # the same preview from the contact list: tick both rows, "With selected" -> "Merge the two selected"
    page.goto(f"{base}/admin/contact/")
    for name in ("Jane Doe", "Jane D."):
        page.locator("tr", has=page.locator(f"a:text-is('{name}')")).locator("input.action-checkbox").check()
    page.click("text=With selected")
    page.click("a[data-tl-action='merge']")
    page.wait_for_url(re.compile(rf".*/admin/merge/contacts/preview\?keep={keep_id}&other={other_id}$"))
    expect(page.locator("#merge-title")).to_have_text("Merge Jane D. into Jane Doe")
    moves = page.locator("#merge-moves")
    expect(moves.locator("tr", has_text="Addresses")).to_contain_text("1")
    expect(moves.locator("tr", has_text="Emails")).to_contain_text("2")
    expect(moves.locator("tr", has_text="Tasks")).to_contain_text("1")
    expect(page.locator("#merge-fills")).to_contain_text("Head of Sales")
    expect(page.locator("#merge-fills")).to_contain_text("+1 555 0100")
    page.screenshot(path=str(OUTPUT_DIR / "merge-preview.png"), full_page=True)

    page.click("#merge-form button[type=submit]")
    page.wait_for_url(re.compile(rf".*/admin/records/contact/{keep_id}$"))
    expect(page.locator(".alert")).to_contain_text("Merged Jane D. into Jane Doe: 1 address, 2 emails")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text(f"Merged contact Jane D. (#{other_id}) into this contact")
    expect(timeline).to_contain_text("Pricing for 50 seats")
    expect(timeline).to_contain_text("Re: pricing, signed")
    expect(page.locator("#tasks")).to_contain_text("Send Jane the contract")
    expect(page.locator("body")).to_contain_text("janedoe+crm@gmail.com")
    expect(page.locator("body")).to_contain_text("Head of Sales")
    page.screenshot(path=str(OUTPUT_DIR / "merge-done.png"), full_page=True)

    # the removed contact's page leads to the kept one
    page.goto(f"{base}/admin/records/contact/{other_id}")
    page.wait_for_url(re.compile(rf".*/admin/records/contact/{keep_id}$"))
    expect(page.locator(".alert")).to_contain_text(f"Contact #{other_id} was merged into this contact.")
    with live_server.db.sessions() as session:
        assert session.scalars(select(Contact.id)).all() == [keep_id]
