"""The record lists' bugs, as a user met them: exports that stopped after the header row, a currency cut to
three letters, a task nobody could complete."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from models.schema import Activity, ActivityKind, Deal, Role, Task
from tests.admin.conftest import fresh, sqlite_only


def csv_rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.status_code
    assert response.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_contact_and_company_exports_hold_every_row(
    app, session, make_user, make_company, make_contact, login
):
    owner = make_user(role=Role.REP, email="owner@team.example")
    acme = make_company("Acme", domain="acme.example", owner=owner)
    make_contact("Jane Buyer", email=["jane@acme.example", "j.buyer@acme.example"], company=acme, owner=owner)
    make_contact("Joe Other", email="joe@other.example")
    browser = login(owner)

    contacts = csv_rows(browser.get("/admin/contact/export/csv/"))
    assert sorted(r["Name"] for r in contacts) == ["Jane Buyer", "Joe Other"]
    jane = next(r for r in contacts if r["Name"] == "Jane Buyer")
    assert jane["Emails"] == "jane@acme.example j.buyer@acme.example"
    assert (jane["Company"], jane["Owner"]) == ("Acme", "owner@team.example")

    companies = csv_rows(browser.get("/admin/company/export/csv/"))
    acme_row = next(r for r in companies if r["Name"] == "Acme")
    assert (acme_row["Domains"], acme_row["Owner"]) == ("acme.example", "owner@team.example")


@sqlite_only
def test_exports_neutralise_cells_a_spreadsheet_would_run(
    app, session, make_user, make_contact, make_deal, login
):
    owner = make_user(role=Role.REP)
    make_contact('=HYPERLINK("https://evil.example","Click")', email="formula@client.example", owner=owner)
    make_deal(title="@SUM(A1:A9)", owner=owner, value="-0")
    browser = login(owner)
    contact = csv_rows(browser.get("/admin/contact/export/csv/"))[0]
    assert contact["Name"] == '\'=HYPERLINK("https://evil.example","Click")'
    deal = csv_rows(browser.get("/admin/deal/export/csv/"))[0]
    assert deal["Title"] == "'@SUM(A1:A9)"
    assert deal["Value"] == "0.00"  # a number stays a number


@sqlite_only
def test_deal_currency_must_be_a_real_currency(app, session, make_user, make_deal, login):
    rep_user = make_user(role=Role.REP)
    rep = login(rep_user)
    refused = rep.post(
        "/admin/deal/new/", {"title": "Dollar deal", "value": "100", "currency": "dollars", "first_stage": ""}
    )
    assert refused.status_code == 200
    assert "&#39;dollars&#39; is not a currency: use an ISO 4217 code like EUR or USD" in refused.text
    assert session.scalar(select(Deal).where(Deal.title == "Dollar deal")) is None
    created = rep.post(
        "/admin/deal/new/", {"title": "Euro deal", "value": "100", "currency": " eur ", "first_stage": ""}
    )
    assert created.status_code == 302
    fresh(session)
    deal = session.scalar(select(Deal).where(Deal.title == "Euro deal"))
    assert deal is not None and deal.currency == "EUR"

    edited = rep.post(
        f"/admin/deal/edit/?id={deal.id}", {"title": "Euro deal", "value": "100", "currency": "DOL"}
    )
    assert edited.status_code == 200 and "&#39;DOL&#39; is not a currency" in edited.text
    fresh(session)
    assert session.get(Deal, deal.id).currency == "EUR"


@sqlite_only
def test_a_task_made_from_the_task_list_can_be_marked_done_there_in_one_click(app, session, make_user, login):
    rita = make_user(role=Role.REP, name="Rita")
    browser = login(rita)
    created = browser.post("/admin/task/new/", {"title": "Call the accountant", "due_at": "2026-11-20 09:00"})
    assert created.status_code == 302
    task = session.scalar(select(Task).where(Task.title == "Call the accountant"))
    assert task is not None and (task.assignee_id, task.deal_id, task.contact_id) == (rita.id, None, None)

    edit = browser.get(f"/admin/task/edit/?id={task.id}").text
    assert 'type="datetime-local"' in edit and 'value="2026-11-20T09:00"' in edit

    listing = browser.get("/admin/task/?search=accountant").text
    button = f'action="/admin/records/task/{task.id}/complete"'
    assert button in listing and "Mark done" in listing
    done = browser.post(f"/admin/records/task/{task.id}/complete", {"next": "/admin/task/?search=accountant"})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/task/?search=accountant"
    fresh(session)
    assert session.get(Task, task.id).done_at is not None
    logged = session.scalar(select(Activity).where(Activity.kind == ActivityKind.TASK))
    assert logged is not None and logged.subject == "Task done: Call the accountant"
    after = browser.get("/admin/task/?search=accountant").text
    assert button not in after  # done: no button any more, the time it was done instead


@sqlite_only
def test_only_the_assignee_or_a_manager_may_mark_a_task_done_or_delete_it(app, session, make_user, login):
    rita, otto = make_user(role=Role.REP, name="Rita"), make_user(role=Role.REP, name="Otto")
    login(rita).post("/admin/task/new/", {"title": "Rita's task"})
    task = session.scalar(select(Task).where(Task.title == "Rita's task"))
    assert task is not None
    other = login(otto)
    assert f"/admin/records/task/{task.id}/complete" not in other.get("/admin/task/").text
    assert other.post(f"/admin/records/task/{task.id}/complete").status_code == 403
    assert other.post("/admin/task/delete/", {"id": task.id}).status_code == 403
    fresh(session)
    assert session.get(Task, task.id).done_at is None

    manager = login(make_user(role=Role.MANAGER))
    assert f"/admin/records/task/{task.id}/complete" in manager.get("/admin/task/").text
    # the assignee may delete their own task
    task_id = task.id
    assert login(rita).post("/admin/task/delete/", {"id": task_id}).status_code == 302
    fresh(session)
    assert session.get(Task, task_id) is None
