"""Reading through the API: every resource's list and record, the filters, cursor pages, problems naming the
field, and emails shown as metadata only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.schema import Role
from tests.admin.test_privacy import PRIVATE_TEXT, emails, mailboxes, team  # noqa: F401 (fixtures)
from tests.api.conftest import fields_of, problem
from tests.fixtures.factories import NOW


@pytest.fixture
def crm(make_user, make_company, make_contact, make_deal, session):
    """A small CRM: two reps, companies, contacts, deals."""
    ann = make_user("ann@team.example", name="Ann", role=Role.REP)
    bob = make_user("bob@team.example", name="Bob", role=Role.MANAGER)
    acme = make_company("Acme", domain="acme.example", owner=ann)
    globex = make_company("Globex", domain="globex.example", owner=bob)
    jane = make_contact("Jane Roe", email="jane@acme.example", company=acme, owner=ann)
    john = make_contact("John Poe", email=["john@globex.example", "jp@gmail.com"], company=globex, owner=bob)
    renewal = make_deal("Acme renewal", stage="Proposal", company=acme, contacts=[jane], owner=ann)
    expansion = make_deal("Globex expansion", stage="Won", company=globex, contacts=[john], owner=bob)
    return {"ann": ann, "bob": bob, "acme": acme, "globex": globex, "jane": jane, "john": john,
            "renewal": renewal, "expansion": expansion}  # fmt: skip


def ids(response):
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.get_json()["data"]]


def test_contacts_list_filters_and_record(crm, api_client):
    api = api_client(crm["ann"])
    jane, john = crm["jane"], crm["john"]
    assert ids(api.get("/api/v1/contacts")) == [john.id, jane.id]  # newest first
    assert ids(api.get("/api/v1/contacts?order=oldest")) == [jane.id, john.id]
    assert ids(api.get("/api/v1/contacts?email=JP@gmail.com")) == [john.id]
    assert ids(api.get("/api/v1/contacts?domain=acme.example")) == [jane.id]
    assert ids(api.get("/api/v1/contacts?owner=me")) == [jane.id]
    assert ids(api.get("/api/v1/contacts?owner=bob@team.example")) == [john.id]
    assert ids(api.get(f"/api/v1/contacts?owner={crm['bob'].id}")) == [john.id]
    assert ids(api.get("/api/v1/contacts?q=roe")) == [jane.id]
    assert ids(api.get(f"/api/v1/contacts?company={crm['globex'].id}")) == [john.id]
    later = (NOW + timedelta(days=3650)).isoformat()
    assert ids(api.get("/api/v1/contacts", query_string={"updated_since": later})) == []
    record = api.get(f"/api/v1/contacts/{john.id}").get_json()
    assert record["email"] == "john@globex.example"
    assert record["emails"] == ["john@globex.example", "jp@gmail.com"]
    assert record["company_id"] == crm["globex"].id and record["owner_id"] == crm["bob"].id


def test_companies_deals_pipelines_users(crm, api_client):
    api = api_client(crm["ann"])
    assert ids(api.get("/api/v1/companies?domain=globex.example")) == [crm["globex"].id]
    assert api.get(f"/api/v1/companies/{crm['acme'].id}").get_json()["domains"] == ["acme.example"]
    assert ids(api.get("/api/v1/deals?status=won")) == [crm["expansion"].id]
    assert ids(api.get("/api/v1/deals?stage=Proposal&pipeline=Sales")) == [crm["renewal"].id]
    assert ids(api.get("/api/v1/deals?owner=me&q=renewal")) == [crm["renewal"].id]
    assert ids(api.get(f"/api/v1/deals?contact={crm['john'].id}")) == [crm["expansion"].id]
    deal = api.get(f"/api/v1/deals/{crm['renewal'].id}").get_json()
    assert (deal["stage"], deal["status"], deal["value"], deal["contact_ids"]) == (
        "Proposal",
        "open",
        "1000.00",
        [crm["jane"].id],
    )
    pipelines = api.get("/api/v1/pipelines").get_json()
    assert [s["name"] for s in pipelines[0]["stages"]][:2] == ["Qualified", "Demo"]
    users = api.get("/api/v1/users?q=bob").get_json()["data"]
    assert [(u["email"], u["role"]) for u in users] == [("bob@team.example", "manager")]
    assert "password_hash" not in users[0]


def test_activities_and_tasks(crm, api_client, session, make_email):
    from models.activities import create_task, log_activity

    note = log_activity(session, kind="note", occurred_at=NOW, now=NOW, subject="Called back",
                        body="Wants a quote", author=crm["ann"], contacts=[crm["jane"]])  # fmt: skip
    task = create_task(
        session, title="Send quote", now=NOW, due_at=NOW, assignee=crm["ann"], deal=crm["renewal"]
    )
    session.commit()
    email = make_email("jane@acme.example", subject="Pricing", text="Shared words")
    api = api_client(crm["bob"])
    assert ids(api.get("/api/v1/activities?kind=note")) == [note.id]
    assert ids(api.get(f"/api/v1/activities?contact={crm['jane'].id}")) == [email.id, note.id]
    assert ids(api.get("/api/v1/activities?q=quote")) == [note.id]
    shown = api.get(f"/api/v1/activities/{email.id}").get_json()
    assert (shown["kind"], shown["direction"], shown["subject"]) == ("email", "in", "Pricing")
    assert "Shared words" in shown["body"]  # a shared mailbox's mail
    assert ids(api.get("/api/v1/tasks?status=open&owner=ann@team.example")) == [task.id]
    assert ids(api.get("/api/v1/tasks?status=done")) == []
    assert api.get(f"/api/v1/tasks/{task.id}").get_json()["status"] == "open"


def test_cursor_pages_cover_every_row_once(make_contact, make_user, api_client):
    made = [make_contact(f"Person {i}", email=f"p{i}@acme.example").id for i in range(7)]
    api = api_client(make_user())
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/contacts", query_string=query).get_json()
        seen += [row["id"] for row in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True) and pages == 3


@pytest.mark.parametrize(
    ("url", "field", "where"),
    [
        ("/api/v1/contacts?limit=0", "limit", "query"),
        ("/api/v1/contacts?limit=abc", "limit", "query"),
        ("/api/v1/contacts?email=not-an-address", "email", "query"),
        ("/api/v1/contacts?owner=nobody@team.example", "owner", "query"),
        ("/api/v1/contacts?updated_since=2026-01-01T00:00:00", "updated_since", "query"),
        ("/api/v1/contacts?cursor=garbage!", "cursor", "query"),
        ("/api/v1/contacts?colour=red", "colour", "query"),
        ("/api/v1/deals?status=maybe", "status", "query"),
        ("/api/v1/deals?stage=Nowhere", "stage", "query"),
        ("/api/v1/activities?kind=fax", "kind", "query"),
    ],
)
def test_bad_query_arguments_are_problems_naming_the_field(make_user, api_client, url, field, where):
    response = api_client(make_user()).get(url)
    assert response.status_code == 422
    body = problem(response)
    assert field in fields_of(body), body
    assert all(e["in"] == where for e in body["errors"])


def test_unknown_records_and_addresses_are_404_problems(make_user, api_client):
    api = api_client(make_user())
    for url in ("/api/v1/contacts/999", "/api/v1/deals/999", "/api/v1/tasks/999", "/api/v1/nowhere"):
        response = api.get(url)
        assert response.status_code == 404
        problem(response)


def test_private_mailbox_mail_shows_its_text_to_its_owner_only(team, emails, api_client):  # noqa: F811
    private = emails["private"]
    owner, colleague = api_client(team["jane"]), api_client(team["bob"])
    assert PRIVATE_TEXT in owner.get(f"/api/v1/activities/{private.id}").get_json()["body"]
    seen = colleague.get(f"/api/v1/activities/{private.id}").get_json()
    assert seen["subject"] == "Budget for next year" and seen["body"] is None
    assert PRIVATE_TEXT not in colleague.get("/api/v1/activities").text
    word = PRIVATE_TEXT.split()[-1].strip(".")
    assert ids(colleague.get("/api/v1/activities", query_string={"q": word})) == []
    assert ids(owner.get("/api/v1/activities", query_string={"q": word})) == [private.id]
