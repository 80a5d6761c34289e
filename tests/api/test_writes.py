"""Writing through the API: the panel's domain operations, the panel's role rules, upsert by email, the
stage move with its history, Idempotency-Key, and problems naming the field."""

from __future__ import annotations

from sqlalchemy import func, select

from models.schema import Activity, Contact, DealStageChange, DealStatus, Role, Task
from tests.admin.conftest import fresh
from tests.api.conftest import fields_of, problem


def test_post_contact_creates_then_updates_the_same_person_by_email(make_user, api_client, session):
    ann = make_user(role=Role.REP)
    api = api_client(ann)
    created = api.post("/api/v1/contacts", {"email": "Jane@Acme.example", "name": "Jane", "phone": "+1 555"})
    assert created.status_code == 201, created.text
    body = created.get_json()
    assert created.headers["Location"].endswith(f"/api/v1/contacts/{body['id']}")
    assert (body["email"], body["owner_id"], body["phone"]) == ("jane@acme.example", ann.id, "+1 555")
    again = api.post("/api/v1/contacts", {"email": "jane@acme.example", "title": "CTO", "phone": None})
    assert again.status_code == 200
    assert again.get_json()["id"] == body["id"]
    assert (again.get_json()["title"], again.get_json()["phone"], again.get_json()["name"]) == (
        "CTO",
        None,
        "Jane",
    )
    fresh(session)
    assert session.scalar(select(func.count(Contact.id))) == 1


def test_a_rep_changes_only_what_they_own_and_gives_nothing_away(make_user, make_contact, api_client):
    ann, bob = make_user(role=Role.REP), make_user(role=Role.REP)
    manager = make_user(role=Role.MANAGER)
    bobs = make_contact("Bob's client", email="client@bob.example", owner=bob)
    rep = api_client(ann)
    refused = rep.patch(f"/api/v1/contacts/{bobs.id}", {"title": "CEO"})
    assert refused.status_code == 403 and "owned by someone else" in problem(refused)["detail"]
    upsert = rep.post("/api/v1/contacts", {"email": "client@bob.example", "title": "CEO"})
    assert upsert.status_code == 403
    gift = rep.post("/api/v1/contacts", {"email": "new@x.example", "owner": bob.email})
    assert gift.status_code == 403 and fields_of(problem(gift)) == {"owner"}
    moved = api_client(manager).patch(f"/api/v1/contacts/{bobs.id}", {"owner": str(ann.id), "title": "CEO"})
    assert moved.status_code == 200 and moved.get_json()["owner_id"] == ann.id
    assert rep.patch(f"/api/v1/contacts/{bobs.id}", {"title": "Chief"}).get_json()["title"] == "Chief"


def test_deals_are_created_and_moved_through_the_stage_move_operation(
    make_user, make_contact, api_client, session
):
    ann = make_user(role=Role.REP)
    jane = make_contact("Jane", email="jane@acme.example", owner=ann)
    api = api_client(ann)
    created = api.post(
        "/api/v1/deals",
        {
            "title": "Acme pilot",
            "value": "1200.50",
            "currency": "eur",
            "stage": "Demo",
            "contact_ids": [jane.id],
        },
    )
    assert created.status_code == 201, created.text
    deal = created.get_json()
    assert (deal["stage"], deal["value"], deal["currency"], deal["contact_ids"]) == (
        "Demo",
        "1200.50",
        "EUR",
        [jane.id],
    )
    moved = api.patch(f"/api/v1/deals/{deal['id']}", {"stage": "Lost", "lost_reason": "Budget cut"})
    assert moved.status_code == 200, moved.text
    assert (moved.get_json()["status"], moved.get_json()["lost_reason"]) == ("lost", "Budget cut")
    fresh(session)
    history = session.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal["id"])).all()
    assert [(h.from_stage.name if h.from_stage else None, h.to_stage.name) for h in history] == [
        (None, "Demo"),
        ("Demo", "Lost"),
    ]
    assert history[-1].changed_by_id == ann.id and history[-1].deal.status == DealStatus.LOST


def test_bad_bodies_are_problems_naming_the_field(make_user, api_client):
    api = api_client(make_user(role=Role.ADMIN))
    cases = [
        ("/api/v1/contacts", {"name": "No address"}, "email"),
        ("/api/v1/contacts", {"email": "not an address"}, "email"),
        ("/api/v1/contacts", {"email": "a@b.example", "shoe_size": 42}, "shoe_size"),
        ("/api/v1/deals", {"title": "x", "value": "12.345"}, "value"),
        ("/api/v1/deals", {"title": "x", "currency": "XXQ"}, "currency"),
        ("/api/v1/deals", {"title": "x", "stage": "Nowhere"}, "stage"),
        ("/api/v1/deals", {"title": "x", "contact_ids": [999]}, "contact_ids"),
        ("/api/v1/activities", {"kind": "email", "subject": "x"}, "kind"),
        ("/api/v1/tasks", {"title": "x", "due_at": "tomorrow"}, "due_at"),
        ("/api/v1/companies", {"name": "X", "domains": ["co.uk"]}, None),
    ]
    for url, body, field in cases:
        response = api.post(url, body)
        assert response.status_code == 422, (url, body, response.text)
        details = problem(response)
        if field:
            assert field in fields_of(details), (url, body, details)
            assert all(e["in"] == "body" for e in details["errors"])


def test_activities_and_tasks_are_written_with_the_panel_operations(
    make_user, make_deal, api_client, session
):
    ann = make_user(role=Role.REP)
    deal = make_deal("Acme renewal", owner=ann)
    api = api_client(ann)
    note = api.post("/api/v1/activities", {"kind": "call", "subject": "Intro call", "deal_id": deal.id})
    assert note.status_code == 201 and note.get_json()["author_id"] == ann.id
    task = api.post("/api/v1/tasks", {"title": "Send the quote", "kind": "email", "deal_id": deal.id})
    assert task.status_code == 201 and task.get_json()["assignee_id"] == ann.id
    done = api.patch(f"/api/v1/tasks/{task.get_json()['id']}", {"done": True})
    assert done.get_json()["status"] == "done"
    fresh(session)
    subjects = session.scalars(select(Activity.subject).where(Activity.deal_id == deal.id)).all()
    assert sorted(subjects) == ["Email sent: Send the quote", "Intro call"]
    assert session.get(Task, task.get_json()["id"]).done_at is not None


def test_idempotency_key_replays_the_first_answer_and_writes_once(make_user, api_client, session):
    api = api_client(make_user(role=Role.REP))
    body = {"title": "Website lead"}
    first = api.post("/api/v1/deals", body, headers={"Idempotency-Key": "order-77"})
    second = api.post("/api/v1/deals", body, headers={"Idempotency-Key": "order-77"})
    assert first.status_code == second.status_code == 201
    assert second.get_json() == first.get_json() and second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    other = api.post("/api/v1/deals", {"title": "Another"}, headers={"Idempotency-Key": "order-77"})
    assert other.status_code == 422 and fields_of(problem(other)) == {"Idempotency-Key"}
    fresh(session)
    from models.schema import Deal

    assert session.scalar(select(func.count(Deal.id))) == 1
    assert api.post("/api/v1/deals", body).status_code == 201  # no key: a second deal


def test_a_browser_session_cannot_write(login, make_user):
    browser = login(make_user(role=Role.ADMIN))
    write = browser.post_json("/api/v1/contacts", {"name": "Eve", "email": "eve@x.example"})
    assert write.status_code == 401
