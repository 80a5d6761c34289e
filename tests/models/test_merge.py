"""Merging contacts and companies: every kind of row moves, empty fields fill, the old id leads to the kept
record, and the unique keys hold (on SQLite and PostgreSQL)."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models.activities import create_task, log_activity
from models.errors import DomainError, NotFoundError
from models.merge import MergeKind, find_record, kept_id_of, merge_records, plan_merge, resolve_merged
from models.schema import (
    Activity,
    ActivityKind,
    Base,
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    Notification,
    RelinkRequest,
    Task,
    activity_contacts,
    deal_contacts,
)


def _email(session, now, contacts, *, key, company=None, deal=None):
    activity = Activity(
        kind=ActivityKind.EMAIL,
        occurred_at=now,
        subject=f"Mail {key}",
        content_key=key,
        company=company,
        deal=deal,
        created_at=now,
    )
    activity.contacts.extend(contacts)
    session.add(activity)
    session.flush()
    return activity


def _moves(plan):
    return {m.label: m.count for m in plan.moves}


def test_merging_contacts_moves_every_kind_of_row_and_fills_empty_fields(
    session, make_contact, make_company, make_deal, make_user, now
):
    rep, admin = make_user(name="Rita Rep"), make_user(name="Ada Admin", role="admin")
    acme = make_company("Acme", domain="acme.example")
    keep = make_contact("Jane Doe", email="jane@acme.example", owner=rep)
    other = make_contact(
        "Jane D.",
        email=["jane.doe@gmail.com", "jd@home.example"],
        company=acme,
        phone="+1 555 0100",
        title="CTO",
        lead_source="webinar",
    )
    shared_deal = make_deal("Acme pilot", contacts=[keep, other], company=acme)
    own_deal = make_deal("Acme renewal", contacts=[other], company=acme)
    both = _email(session, now, [keep, other], key="both")
    theirs = _email(session, now - timedelta(days=2), [other], key="theirs")
    log_activity(session, kind="note", occurred_at=now, now=now, subject="Met at the fair", contacts=[other])
    log_activity(session, kind="call", occurred_at=now, now=now, subject="Intro call", contacts=[other])
    task = create_task(session, title="Send the quote", now=now, contact=other, assignee=rep)
    session.add(
        Notification(
            key="waiting:x", kind="waiting", user_id=rep.id, contact_id=other.id, title="t", created_at=now
        )
    )
    other.last_activity_at = now + timedelta(days=1)
    session.commit()

    plan = plan_merge(session, MergeKind.CONTACT, keep, other)
    assert _moves(plan) == {
        "addresses": 2,
        "emails": 2,
        "notes": 1,
        "other activities": 1,
        "deals": 2,
        "tasks": 1,
        "notifications": 1,
    }
    assert {f.label: f.value for f in plan.fills} == {
        "title": "CTO",
        "phone": "+1 555 0100",
        "company": "Acme",
        "lead source": "webinar",
    }  # name and owner are set on the kept one: not overwritten

    result = merge_records(session, MergeKind.CONTACT, keep.id, other.id, now=now, by=admin)
    session.commit()
    session.expire_all()

    kept = session.get(Contact, keep.id)
    assert session.get(Contact, other.id) is None
    assert [e.email for e in kept.emails] == ["jane@acme.example", "jane.doe@gmail.com", "jd@home.example"]
    assert (kept.name, kept.title, kept.phone, kept.company_id, kept.owner_id, kept.lead_source) == (
        "Jane Doe", "CTO", "+1 555 0100", acme.id, rep.id, "webinar",
    )  # fmt: skip
    assert kept.last_activity_at == now + timedelta(days=1)
    assert sorted(d.title for d in kept.deals) == ["Acme pilot", "Acme renewal"]
    assert session.scalar(select(func.count()).select_from(deal_contacts).where(
        deal_contacts.c.deal_id == shared_deal.id)) == 1  # fmt: skip
    linked = session.scalars(
        select(activity_contacts.c.activity_id).where(activity_contacts.c.contact_id == keep.id)
    ).all()
    assert {both.id, theirs.id} <= set(linked)
    assert len(linked) == len(set(linked)) == 5  # two emails, the note, the call, and the merge itself
    assert session.get(Task, task.id).contact_id == keep.id
    assert session.scalar(select(Notification.contact_id)) == keep.id
    assert own_deal.id in {d.id for d in kept.deals}
    # on the kept record's timeline
    merge = session.get(Activity, result.activity_id)
    assert merge.kind == ActivityKind.MERGE and [c.id for c in merge.contacts] == [keep.id]
    assert merge.subject == f"Merged contact Jane D. (#{other.id}) into this contact"
    assert "by Ada Admin" in merge.body and "2 addresses" in merge.body and "fills title" in merge.body
    # the old id leads to the kept one
    assert kept_id_of(session, MergeKind.CONTACT, other.id) == keep.id
    assert result.added_keys == ("jane.doe@gmail.com", "jd@home.example")
    # the kept contact's new addresses get their earlier skipped mail looked at again
    assert set(session.scalars(select(RelinkRequest.address).where(RelinkRequest.requested_at == now))) >= {
        "jane.doe@gmail.com",
        "jd@home.example",
    }


def test_merging_companies_moves_domains_contacts_deals_and_activities(
    session, make_company, make_contact, make_deal, make_user, now
):
    owner = make_user(name="Olga Owner")
    keep = make_company("Acme", domain="acme.example")
    other = make_company("ACME Corp", domain="acme-corp.example", owner=owner)
    other.domains.append(CompanyDomain(domain="acme.co.uk"))
    person = make_contact("Bob", email="bob@acme-corp.example", company=other)
    deal = make_deal("Big one", company=other, contacts=[person])
    create_task(session, title="Call Bob", now=now, deal=deal)
    _email(session, now, [person], key="k1", company=other, deal=deal)
    log_activity(session, kind="note", occurred_at=now, now=now, subject="Board meeting", company=other)
    session.commit()

    plan = plan_merge(session, MergeKind.COMPANY, keep, other)
    assert _moves(plan) == {
        "domains": 2, "contacts": 1, "emails": 1, "notes": 1, "other activities": 0, "deals": 1,
        "tasks": 1, "notifications": 0,
    }  # fmt: skip
    assert [(f.label, f.value) for f in plan.fills] == [("owner", "Olga Owner")]
    merge_records(session, MergeKind.COMPANY, keep.id, other.id, now=now)
    session.commit()
    session.expire_all()

    kept = session.get(Company, keep.id)
    assert session.get(Company, other.id) is None
    assert sorted(d.domain for d in kept.domains) == ["acme-corp.example", "acme.co.uk", "acme.example"]
    assert session.get(Contact, person.id).company_id == keep.id
    assert session.get(Deal, deal.id).company_id == keep.id
    assert kept.owner_id == owner.id
    timeline = session.scalars(
        select(Activity.kind).where(Activity.company_id == keep.id).order_by(Activity.id)
    ).all()
    assert timeline == [ActivityKind.EMAIL, ActivityKind.NOTE, ActivityKind.MERGE]
    assert find_record(session, MergeKind.COMPANY, "acme-corp.example").id == keep.id
    assert {"acme-corp.example", "acme.co.uk"} <= set(session.scalars(select(RelinkRequest.domain)))


def test_redirects_follow_a_chain_of_merges_and_refuse_merging_twice(session, make_contact, now):
    a, b, c = make_contact("A"), make_contact("B"), make_contact("C")
    merge_records(session, MergeKind.CONTACT, b.id, a.id, now=now)
    merge_records(session, MergeKind.CONTACT, c.id, b.id, now=now)
    session.commit()
    assert kept_id_of(session, MergeKind.CONTACT, a.id) == c.id
    assert kept_id_of(session, MergeKind.CONTACT, b.id) == c.id
    with pytest.raises(NotFoundError, match=f"contact {a.id} was merged into contact {c.id}"):
        merge_records(session, MergeKind.CONTACT, c.id, a.id, now=now)
    with pytest.raises(DomainError, match="two different contacts"):
        merge_records(session, MergeKind.CONTACT, c.id, c.id, now=now)
    with pytest.raises(NotFoundError, match="no contact with id 999999"):
        find_record(session, MergeKind.CONTACT, "999999")
    with pytest.raises(NotFoundError, match="no contact has the address"):
        find_record(session, MergeKind.CONTACT, "nobody@nowhere.example")


def test_unique_keys_hold_and_nothing_doubles(session, make_contact, make_deal, now):
    keep = make_contact(email="a@x.example")
    other = make_contact(email="b@x.example")
    deals = [make_deal(contacts=[keep, other]) for _ in range(3)]
    for n in range(5):
        _email(session, now, [keep, other], key=f"m{n}")
    session.commit()
    before = session.scalar(select(func.count()).select_from(Activity))
    merge_records(session, MergeKind.CONTACT, keep.id, other.id, now=now)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Activity)) == before + 1
    assert session.scalar(select(func.count()).select_from(deal_contacts)) == 3
    assert session.scalar(select(func.count()).select_from(activity_contacts)) == 6
    assert session.scalar(select(func.count()).select_from(ContactEmail)) == 2
    assert {d.id for d in session.get(Contact, keep.id).deals} == {d.id for d in deals}


def test_the_sync_lookup_follows_merges(session, make_contact, make_company, now):
    acme, acme2 = make_company("Acme"), make_company("Acme 2")
    keep = make_contact(email="k@x.example", company=acme)
    other = make_contact(email="o@x.example", company=acme2)
    stale = {"o@x.example": (other.id, acme2.id), "k@x.example": (keep.id, acme.id)}
    merge_records(session, MergeKind.CONTACT, keep.id, other.id, now=now)
    session.commit()
    assert resolve_merged(session, stale) == {
        "o@x.example": (keep.id, acme.id),
        "k@x.example": (keep.id, acme.id),
    }
    merge_records(session, MergeKind.COMPANY, acme2.id, acme.id, now=now)
    session.commit()
    assert resolve_merged(session, stale)["k@x.example"] == (keep.id, acme2.id)


def test_every_table_pointing_at_a_contact_or_company_moves(session, make_contact, make_company, now):
    """A table added later with a foreign key to contacts or companies is moved too (read from the schema)."""
    from models.merge import _references

    contact_refs = {(r.table.name, r.column.name) for r in _references(MergeKind.CONTACT)}
    company_refs = {(r.table.name, r.column.name) for r in _references(MergeKind.COMPANY)}
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "contacts" and table.name != "contacts":
                assert (table.name, fk.parent.name) in contact_refs
            if fk.column.table.name == "companies" and table.name != "companies":
                assert (table.name, fk.parent.name) in company_refs
    assert ("deal_contacts", "contact_id") in contact_refs and ("contacts", "company_id") in company_refs
