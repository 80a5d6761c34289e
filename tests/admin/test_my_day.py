"""My day, planned activities, search everywhere and quick add, through the real app (CSRF on, logins)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from models.activities import create_task
from models.schema import Activity, ActivityKind, Company, Contact, Deal, PlannedKind, Role, Task
from tests.admin.conftest import PASSWORD, csrf_from, fresh, log_in, sqlite_only

DAY = timedelta(days=1)


def test_login_lands_on_my_day_with_my_overdue_and_today_first(app, session, make_user, make_deal, now):
    rep = make_user(name="Rita Rep")
    other = make_user(name="Olaf Other")
    deal = make_deal("Acme renewal", owner=rep)
    create_task(
        session, title="Call Acme back", now=now, kind="call", due_at=now - DAY, assignee=rep, deal=deal
    )
    create_task(session, title="Send the quote", now=now, due_at=now + timedelta(hours=2), assignee=rep)
    create_task(session, title="Olaf's call", now=now, due_at=now - DAY, assignee=other)
    session.commit()
    client = app.test_client()
    response = log_in(client, rep.email, PASSWORD)
    assert response.headers["Location"] == "/admin/day/"
    page = client.get("/admin/day/").text
    overdue = page[page.index('id="overdue"') : page.index('id="today"')]
    assert "Call Acme back" in overdue and "Acme renewal" in overdue and "Call</span>" in overdue
    today = page[page.index('id="today"') : page.index('id="upcoming"')]
    assert "Send the quote" in today and "today 11:00" in today  # the test team works in UTC
    assert "Olaf's call" not in page
    assert 'id="view-team"' not in page  # a rep has no team switch


def test_done_in_one_click_logs_it_on_the_timeline_and_comes_back(
    app, session, make_user, make_deal, login, now
):
    rep = make_user(name="Rita Rep")
    deal = make_deal("Acme renewal", owner=rep)
    call = create_task(
        session, title="Call Acme", now=now, kind="call", due_at=now - DAY, assignee=rep, deal=deal
    )
    session.commit()
    browser = login(rep)
    # without the CSRF token nothing happens
    refused = browser.client.post(f"/admin/records/task/{call.id}/complete", data={"next": "/admin/day/"})
    assert refused.status_code == 400
    done = browser.post(f"/admin/records/task/{call.id}/complete", {"next": "/admin/day/"})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/day/"
    page = browser.get("/admin/day/").text
    assert "Done: Call Acme" in page and 'id="planned-' not in page
    fresh(session)
    logged = session.scalars(select(Activity).where(Activity.deal_id == deal.id)).all()
    assert [(a.kind, a.subject) for a in logged] == [(ActivityKind.CALL, "Call Acme")]
    deal_page = browser.get(f"/admin/records/deal/{deal.id}").text
    assert "Call Acme" in deal_page[deal_page.index('id="timeline"') :]
    assert 'id="no-next-step"' in deal_page  # nothing planned any more: flagged


def test_a_rep_cannot_complete_someone_elses_activity_and_only_managers_see_the_team(
    app, session, make_user, login, now
):
    rep, other = make_user(), make_user()
    manager = make_user(role=Role.MANAGER)
    theirs = create_task(session, title="Their call", now=now, due_at=now - DAY, assignee=other)
    session.commit()
    browser = login(rep)
    assert browser.post(f"/admin/records/task/{theirs.id}/complete").status_code == 403
    assert "Their call" not in browser.get("/admin/day/?team=1").text  # a rep asking for the team gets theirs
    boss = login(manager)
    team = boss.get("/admin/day/?team=1").text
    assert "Team day" in team and "Their call" in team
    assert "Their call" not in boss.get("/admin/day/").text


def test_my_day_needs_a_login(app):
    response = app.test_client().get("/admin/day/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert app.test_client().get("/admin/search/suggest?q=acme").status_code == 302


def test_deal_page_shows_its_next_step_and_plans_one_with_type_date_and_time(
    app, session, make_user, make_deal, login
):
    rep = make_user()
    deal = make_deal("Globex pilot", owner=rep)
    browser = login(rep)
    page = browser.get(f"/admin/records/deal/{deal.id}").text
    assert "No next step planned" in page
    planned = browser.post(
        f"/admin/records/deal/{deal.id}/task",
        {"kind": "meeting", "title": "Demo with the CTO", "due_on": "2026-11-25", "due_time": ""},
    )
    assert planned.status_code == 302
    page = browser.get(f"/admin/records/deal/{deal.id}").text
    step = page[page.index('id="next-step"') :]
    assert "Meeting" in step[:300] and "Demo with the CTO" in step[:300] and "Wed 25 Nov" in step[:300]
    fresh(session)
    task = session.scalar(select(Task).where(Task.deal_id == deal.id))
    assert task is not None and (task.kind, task.has_due_time) == (PlannedKind.MEETING, False)
    bad = browser.post(f"/admin/records/deal/{deal.id}/task", {"title": "x", "due_on": "next tuesday"})
    assert bad.status_code == 302
    assert "is not a date" in browser.get(f"/admin/records/deal/{deal.id}").text


def test_search_page_and_suggestions_find_contacts_companies_and_deals(
    app, session, make_user, make_company, make_contact, make_deal, login
):
    acme = make_company("Acme Robotics", domain="acme-robotics.example")
    pat = make_contact(
        "Patricia Smithers", email="pat@acme-robotics.example", company=acme, phone="+1 555 0100"
    )
    deal = make_deal("Robotics arm upgrade", company=acme)
    browser = login(make_user())
    page = browser.get("/admin/search/?q=robotics").text
    results = page[page.index('id="search-results"') :]
    companies = results[results.index("Companies") : results.index("Deals")]
    assert f'href="/admin/records/company/{acme.id}" class="tl-hit">Acme Robotics' in companies
    assert f'href="/admin/records/deal/{deal.id}" class="tl-hit">Robotics arm upgrade' in results
    answer = browser.get("/admin/search/suggest?q=555 01").get_json()
    assert answer["groups"] == [
        {
            "label": "Contacts",
            "hits": [
                {
                    "label": "Patricia Smithers",
                    "detail": "+1 555 0100 · Acme Robotics",
                    "url": f"/admin/records/contact/{pat.id}",
                }
            ],
        }
    ]
    assert "Nothing matches" in browser.get("/admin/search/?q=<zzz>").text
    assert "&lt;zzz&gt;" in browser.get("/admin/search/?q=<zzz>").text


def test_quick_add_contact_creates_its_company_inline_and_opens_the_contact(
    app, session, make_user, make_company, login
):
    make_company("Globex", domain="globex.example")
    rep = make_user()
    browser = login(rep)
    form = browser.get("/admin/quick/contact").text
    assert "Please select" not in form and form.count('type="submit"') == 2  # the form's save + the logout
    saved = browser.post(
        "/admin/quick/contact",
        {"name": "Nora New", "emails": "nora@initech.example", "company": "Initech", "phone": "+1 555 0199"},
    )
    assert saved.status_code == 302
    fresh(session)
    nora = session.scalar(select(Contact).where(Contact.name == "Nora New"))
    assert nora is not None and saved.headers["Location"] == f"/admin/records/contact/{nora.id}"
    assert nora.company is not None and nora.company.name == "Initech" and nora.owner_id == rep.id
    # an existing company is reused, whatever the case
    browser.post("/admin/quick/contact", {"name": "Gus", "company": "globex"})
    fresh(session)
    assert session.scalars(select(Company.name).order_by(Company.name)).all() == ["Globex", "Initech"]
    # a mistake keeps what was typed and says what to fix
    bad = browser.post("/admin/quick/contact", {"name": "Kim", "emails": "not-an-address", "phone": "12"})
    assert bad.status_code == 200 and "is not an email address" in bad.text
    assert 'value="Kim"' in bad.text and 'value="12"' in bad.text


def test_add_deal_from_a_contact_is_prefilled_and_opens_the_deal(
    app, session, make_user, make_company, make_contact, login
):
    acme = make_company("Acme")
    pat = make_contact("Pat", company=acme)
    browser = login(make_user())
    contact_page = browser.get(f"/admin/records/contact/{pat.id}").text
    assert f"/admin/quick/deal?contact_id={pat.id}" in contact_page
    form = browser.get(f"/admin/quick/deal?contact_id={pat.id}").text
    assert 'value="Acme"' in form and "New deal with Pat" in form
    saved = browser.post(
        "/admin/quick/deal",
        {"contact_id": pat.id, "title": "Acme: 50 seats", "company": "Acme", "value": "12000"},
    )
    fresh(session)
    deal = session.scalar(select(Deal).where(Deal.title == "Acme: 50 seats"))
    assert deal is not None and saved.headers["Location"] == f"/admin/records/deal/{deal.id}"
    assert deal.company_id == acme.id and [c.id for c in deal.contacts] == [pat.id]
    # Flask-Admin's create form sends people to the quick form
    assert browser.get("/admin/deal/new/").headers["Location"] == "/admin/quick/deal"
    bad = browser.post("/admin/quick/deal", {"title": "Dollars", "value": "10", "currency": "dollars"})
    assert bad.status_code == 200 and "Not saved" in bad.text and 'value="dollars"' in bad.text


@sqlite_only
def test_quick_activity_without_a_record_lands_on_my_day(app, session, make_user, login):
    rep = make_user()
    browser = login(rep)
    saved = browser.post(
        "/admin/quick/activity",
        {"kind": "email", "title": "Write to the board", "due_on": "2026-11-23", "due_time": "16:30"},
    )
    assert saved.headers["Location"] == "/admin/day/"
    page = browser.get("/admin/day/").text
    assert "Write to the board" in page and "today 16:30" in page
    missing_day = browser.post("/admin/quick/activity", {"kind": "call", "title": "Call"})
    assert "choose the day it is due" in missing_day.text


def test_the_header_has_search_and_quick_add_on_every_page(app, make_user, login):
    browser = login(make_user())
    page = browser.get("/admin/contact/").text
    assert 'id="tl-search"' in page and 'id="tl-new-contact"' in page and "search.js" in page
    html = browser.get("/admin/day/").text
    token = csrf_from(html)
    assert token
