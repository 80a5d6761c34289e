"""End to end in a real Chromium: log in, create records through the forms, drag a deal across the board,
read a contact's timeline with an email the sync logged, open a malicious email (nothing runs), log out.

Screenshots of the board and the dashboard land in test-output/ at the repository root.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from models.db import transaction
from models.domains import company_domain_of
from models.email_log import record_email
from models.messages import Attachment, Direction, MessageRef, NewContact, Placement
from models.schema import Contact, Deal
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, OUTPUT_DIR
from tests.fixtures.emails import stored_email
from tests.fixtures.factories import NOW

MALICIOUS_HTML = (
    "<p>Please pay the invoice</p><script>window.__pwned=1; alert('script')</script>"
    '<img src="x" onerror="window.__pwned=2; alert(\'onerror\')">'
    '<a id="evil-link" href="javascript:window.__pwned=3">click me</a>'
    '<form action="https://evil.example/"><input name="password"><button>Log in</button></form>'
    '<style>p { color: red }</style><svg onload="window.__pwned=4"></svg>'
)


def log_email(
    live, to: str, subject: str, *, text: str, html: str | None, mailboxes: tuple[str, ...], uid: int
):
    email = stored_email(
        content_key=f"e2e-{uid}",
        message_id=f"<e2e-{uid}@client.example>",
        subject=subject,
        sent_at=NOW,
        from_address=to,
        to_addresses=("boss@team.example",),
        text=text,
        html=html,
        attachments=(Attachment("terms.txt", "text/plain", 5, b"terms"),),
    )
    placement = Placement(
        Direction.IN, link=(), create=(NewContact(to, "", company_domain_of(to.split("@")[1])),)
    )
    with transaction(live.db.sessions) as session:
        for i, mailbox in enumerate(mailboxes):
            ref = MessageRef(mailbox=mailbox, folder="INBOX", uidvalidity=1, uid=uid * 10 + i)
            outcome = record_email(session, email, placement, ref=ref, now=NOW)
        assert outcome.activity_id is not None


def test_a_day_in_the_panel(live_server, browser_page):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # log in
    page.goto(f"{base}/admin/")
    assert "/login" in page.url
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(lambda url: url.startswith(f"{base}/admin/"))  # my day or the page asked for
    assert "Bea Boss (admin)" in page.inner_text("#tl-whoami")

    # create a company, a contact and a deal through the forms (the list's "Create" opens the quick form;
    # saving opens the new record)
    page.goto(f"{base}/admin/company/new/")
    page.fill("#f-name", "Acme Corp")
    page.fill("#f-domains", "acme.example")
    page.click("#quick-save")
    page.wait_for_url(re.compile(r".*/admin/records/company/\d+$"))
    assert page.inner_text("#record-title") == "Acme Corp"

    page.goto(f"{base}/admin/contact/new/")
    page.fill("#f-name", "Jane Doe")
    page.fill("#f-emails", "jane@acme.example")
    page.fill("#f-company", "Acme Corp")
    page.click("#quick-save")
    page.wait_for_url(re.compile(r".*/admin/records/contact/\d+$"))
    assert page.inner_text("#record-title") == "Jane Doe" and "Acme Corp" in page.inner_text("dl")

    # "Add deal" on the contact's page: the company comes prefilled from the contact
    page.click("#add-deal")
    assert page.input_value("#f-company") == "Acme Corp"
    page.fill("#f-title", "Acme rollout")
    page.fill("#f-value", "12,500.00")
    page.select_option("#f-stage_id", label="Qualified")
    page.click("#quick-save")
    page.wait_for_url(re.compile(r".*/admin/records/deal/\d+$"))
    assert page.inner_text("#record-title") == "Acme rollout"
    with live_server.db.sessions() as session:
        deal = session.scalar(select(Deal).where(Deal.title == "Acme rollout"))
        assert deal is not None and deal.company is not None and deal.company.name == "Acme Corp"
        assert [c.name for c in deal.contacts] == ["Jane Doe"]
        deal_id = deal.id

    # drag the deal across the board: the columns update in place, no page reload
    page.goto(f"{base}/admin/board/")
    qualified = page.locator('.tl-column[data-stage-name="Qualified"]')
    proposal = page.locator('.tl-column[data-stage-name="Proposal"]')
    assert qualified.locator(".tl-count").inner_text() == "1"
    assert proposal.locator(".tl-count").inner_text() == "0"
    page.evaluate("window.__sameDocument = true")
    page.locator(f"#deal-{deal_id}").drag_to(proposal.locator(".tl-cards"))
    expect(proposal.locator(".tl-count")).to_have_text("1")
    assert qualified.locator(".tl-count").inner_text() == "0"
    assert proposal.locator(".tl-total").inner_text() == "$12,500"
    assert proposal.locator(".tl-weighted").inner_text() == "$6,250"
    assert proposal.locator(f"#deal-{deal_id}").count() == 1
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(OUTPUT_DIR / "board.png"), full_page=True)

    # the keyboard alternative: the card's Move button opens one dialog
    page.click(f"#deal-{deal_id} .tl-card-menu")
    page.check("#move-dialog >> text=Negotiation")
    page.click("#move-submit")
    expect(page.locator('.tl-column[data-stage-name="Negotiation"] .tl-count')).to_have_text("1")
    assert page.evaluate("window.__sameDocument") is True

    # the deal page shows the stage history
    page.goto(f"{base}/admin/records/deal/{deal_id}")
    history = page.inner_text("#stage-history")
    assert re.search(r"Qualified\s+Proposal\s+Bea Boss", history)
    assert re.search(r"Proposal\s+Negotiation\s+Bea Boss", history)

    page.goto(f"{base}/admin/")
    assert page.inner_text("#kpi-open").startswith("$12,500")
    page.screenshot(path=str(OUTPUT_DIR / "dashboard.png"), full_page=True)

    # an email the sync logged, on the contact's timeline, opened on demand
    log_email(
        live_server,
        "jane@acme.example",
        "Rollout schedule",
        text="Can we start on Monday?",
        html="<p>Can we start on <b>Monday</b>?</p>",
        mailboxes=("sales", "support"),
        uid=1,
    )
    with live_server.db.sessions() as session:
        jane = session.scalar(select(Contact).where(Contact.name == "Jane Doe"))
        assert jane is not None
        jane_id = jane.id
    page.goto(f"{base}/admin/contact/")
    page.click("text=Jane Doe")
    page.wait_for_url(f"{base}/admin/records/contact/{jane_id}")
    timeline = page.inner_text("#timeline")
    assert "Rollout schedule" in timeline and "Can we start on Monday?" in timeline
    assert "sales / INBOX" in timeline and "support / INBOX" in timeline and "terms.txt" in timeline
    page.click("#timeline .tl-open")
    frame = page.frame_locator("iframe.tl-email-frame")
    assert frame.locator("b").inner_text() == "Monday"

    # a malicious email: nothing in it runs
    log_email(
        live_server,
        "mallory@evil.example",
        "Overdue invoice",
        text="Please pay",
        html=MALICIOUS_HTML,
        mailboxes=("sales",),
        uid=2,
    )
    with live_server.db.sessions() as session:
        mallory = session.scalar(select(Contact).where(Contact.name == "Mallory"))
        assert mallory is not None
        mallory_id = mallory.id
    page.goto(f"{base}/admin/records/contact/{mallory_id}")
    page.click("#timeline .tl-open")
    frame = page.frame_locator("iframe.tl-email-frame")
    assert frame.locator("p").first.inner_text() == "Please pay the invoice"
    frame.locator("text=click me").click()
    page.wait_for_timeout(300)  # give any (blocked) handler a chance to fire before looking
    assert page.evaluate("window.__pwned") is None
    email_frame = next(f for f in page.frames if f != page.main_frame)
    try:
        in_frame = email_frame.evaluate("window.__pwned")
    except Exception as exc:  # the sandbox may refuse even the test's own evaluation
        in_frame = f"no script context: {type(exc).__name__}"
    assert in_frame is None or str(in_frame).startswith("no script context"), in_frame
    assert dialogs == []
    frame_html = page.get_attribute("iframe.tl-email-frame", "sandbox")
    assert frame_html == ""

    # log out
    page.click("#tl-logout")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{base}/admin/board/")
    assert "/login" in page.url
