"""`threadline import deals`: stages by name, won/lost stages close the deal, re-import moves the stage."""

from decimal import Decimal

from sqlalchemy import select

from models.schema import Deal, DealStatus

HEADER = "title,value,currency,pipeline,stage,company,contacts,owner,expected_close,lost_reason\n"


def deals(db):
    with db.sessions() as session:
        return {
            d.title: {
                "value": d.value,
                "currency": d.currency,
                "stage": d.stage.name,
                "status": d.status,
                "closed": d.closed_at is not None,
                "company": d.company.name if d.company else None,
                "contacts": sorted(c.emails[0].email for c in d.contacts),
                "owner": d.owner.email if d.owner else None,
                "expected_close": d.expected_close_on.isoformat() if d.expected_close_on else None,
                "lost_reason": d.lost_reason,
                "history": [c.to_stage.name for c in d.stage_changes],
            }
            for d in session.scalars(select(Deal))
        }


def test_deals_import_with_stages_contacts_and_bad_rows(
    cli, db, write_csv, make_contact, make_company, make_user
):
    make_user("rep@team.example")
    acme = make_company("Acme", domain="acme.com")
    make_contact("Jane", email="jane@acme.com", company=acme)
    make_contact("Joe", email="joe@acme.com", company=acme)
    path = write_csv(
        "deals.csv",
        HEADER
        + (
            # line 2
            'Acme renewal,"12,500.50",eur,,,Acme,JANE@acme.com; joe@acme.com,rep@team.example,2027-03-31,\n'
            "Globex pilot,3000,,sales,won,Globex,,,,\n"  # 3: a new company, a won stage
            "Initech audit,900,,,Lost,initech.example,,,,Budget cut\n"  # 4
            "Bad stage,100,,,Closing,,,,,\n"  # 5
            "Unknown contact,100,,,,,nobody@acme.com,,,\n"  # 6
            "Bad date,100,,,,,,,31/03/2027,\n"  # 7
            "Bad pipeline,100,,Enterprise,,,,,,\n"  # 8
            "Bad value,12.345,,,,,,,,\n"  # 9
        ),
    )
    result = cli("import", "deals", str(path))
    assert result.code == 1
    assert result.err_lines == [
        f"{path}:5: skipped: no stage named 'Closing' in pipeline 'Sales' "
        "(known: Qualified, Demo, Proposal, Negotiation, Won, Lost)",
        f"{path}:6: skipped: contacts: no contact has the address nobody@acme.com (import contacts first)",
        f"{path}:7: skipped: expected_close '31/03/2027' is not a date like 2026-03-31",
        f"{path}:8: skipped: no pipeline named 'Enterprise' (known: Sales)",
        f"{path}:9: skipped: '12.345' has more than two decimals",
        "threadline: 5 bad row(s) skipped (listed above); the good rows were imported",
    ]
    assert result.out == f"{path}: deals: 3 created, 0 updated, 5 skipped\n"
    found = deals(db)
    assert sorted(found) == ["Acme renewal", "Globex pilot", "Initech audit"]
    assert found["Acme renewal"] == {
        "value": Decimal("12500.50"),
        "currency": "EUR",
        "stage": "Qualified",
        "status": DealStatus.OPEN,
        "closed": False,
        "company": "Acme",
        "contacts": ["jane@acme.com", "joe@acme.com"],
        "owner": "rep@team.example",
        "expected_close": "2027-03-31",
        "lost_reason": None,
        "history": ["Qualified"],
    }
    globex = found["Globex pilot"]
    assert (globex["stage"], globex["status"], globex["closed"], globex["company"]) == (
        "Won",
        DealStatus.WON,
        True,
        "Globex",
    )
    initech = found["Initech audit"]
    assert (initech["status"], initech["closed"], initech["lost_reason"]) == (
        DealStatus.LOST,
        True,
        "Budget cut",
    )


def test_reimport_updates_the_same_deal_and_moves_its_stage(cli, db, write_csv, make_company):
    make_company("Acme", domain="acme.com")
    first = write_csv("v1.csv", HEADER + "Acme renewal,1000,,,Demo,Acme,,,,\nSide deal,50,,,,,,,,\n")
    assert cli("import", "deals", str(first)).code == 0
    second = write_csv("v2.csv", HEADER + "ACME Renewal ,2000,,,won,acme,,,,\nSide deal,,,,,,,,,\n")
    result = cli("import", "deals", str(second))
    assert (result.code, result.out) == (0, f"{second}: deals: 0 created, 2 updated, 0 skipped\n")
    found = deals(db)
    assert sorted(found) == ["Acme renewal", "Side deal"]
    renewal = found["Acme renewal"]
    assert (renewal["value"], renewal["stage"], renewal["status"], renewal["closed"]) == (
        Decimal("2000.00"),
        "Won",
        DealStatus.WON,
        True,
    )
    assert renewal["history"] == ["Demo", "Won"]
    # empty cells keep what the deal has
    assert (found["Side deal"]["value"], found["Side deal"]["stage"]) == (Decimal("50.00"), "Qualified")


def test_a_currency_that_is_not_iso_4217_is_a_bad_row_with_its_line(cli, db, write_csv, make_company):
    make_company("Acme", domain="acme.com")
    first = write_csv(
        "money.csv",
        HEADER
        + "Dollars deal,100,dollars,,,,,,,\n"  # 2: was cut to "DOL" by the panel; never a currency
        + "Three letters,100,DOL,,,,,,,\n"  # 3
        + "Lower case,100,chf,,,,,,,\n"  # 4
        + "Acme renewal,100,EUR,,,Acme,,,,\n",  # 5
    )
    result = cli("import", "deals", str(first))
    assert result.code == 1
    assert result.err_lines == [
        f"{first}:2: skipped: 'dollars' is not a currency: use an ISO 4217 code like EUR or USD",
        f"{first}:3: skipped: 'DOL' is not a currency: use an ISO 4217 code like EUR or USD",
        "threadline: 2 bad row(s) skipped (listed above); the good rows were imported",
    ]
    assert {title: d["currency"] for title, d in deals(db).items()} == {
        "Lower case": "CHF",
        "Acme renewal": "EUR",
    }
    # updating an existing deal checks the same rule, and a bad row changes nothing
    second = write_csv("money2.csv", HEADER + "Acme renewal,200,euros,,,Acme,,,,\n")
    again = cli("import", "deals", str(second))
    assert again.code == 1
    assert again.err_lines[0] == (
        f"{second}:2: skipped: 'euros' is not a currency: use an ISO 4217 code like EUR or USD"
    )
    renewal = deals(db)["Acme renewal"]
    assert (renewal["currency"], renewal["value"]) == ("EUR", Decimal("100.00"))


def test_deals_file_without_title_column_is_refused(cli, write_csv):
    path = write_csv("nodeal.csv", "name,value\nX,1\n")
    result = cli("import", "deals", str(path))
    assert result.code == 2
    assert result.err == f"threadline: {path}: the header has no 'title' column (found: name, value)\n"
