"""Likely duplicates: each rule finds its pairs on SQLite and PostgreSQL, and nothing else."""

from models.duplicates import find_duplicates
from models.schema import CompanyDomain


def _groups(found, reason):
    return sorted(tuple(sorted(m.label for m in g.members)) for g in found if g.reason == reason)


def test_each_rule_finds_its_duplicates_and_nothing_else(session, make_contact, make_company):
    acme = make_company("Acme", domain="acme.example")
    acme_uk = make_company("ACME ", domain="acme.co.uk")
    make_company("Acme EU", domain="eu.acme.co.uk")
    make_company("Globex", domain="globex.example")
    make_contact("Jane Doe", email="jane@acme.example", company=acme)
    make_contact("jane doe ", email="jdoe@acme.example", company=acme)
    make_contact("Jane Doe", email="jane@acme.co.uk", company=acme_uk)  # same name, other company: no
    make_contact("Phone One", email="p1@x.example", phone="+1 (555) 010-0199")
    make_contact("Phone Two", email="p2@x.example", phone="001 555 010 0199")
    make_contact("Phone Three", email="p3@x.example", phone="12-34-56")  # too short a number to match on
    make_contact("Phone Four", email="p4@x.example", phone="123456")
    make_contact("Gmail Dots", email="jane.doe@gmail.com")
    make_contact("Gmail Tag", email="janedoe+crm@googlemail.com")
    make_contact("Tag Base", email="bob@globex.example")
    make_contact("Tag Plus", email="bob+news@globex.example")
    make_contact("Dots Elsewhere", email="b.o.b@globex.example")  # dots count outside Gmail: no
    session.commit()

    found = find_duplicates(session)
    assert _groups(found.contacts, "Same name at the same company") == [("Jane Doe", "jane doe ")]
    assert _groups(found.contacts, "Same phone") == [("Phone One", "Phone Two")]
    assert _groups(found.contacts, "Same address but for dots or +tag") == [
        ("Gmail Dots", "Gmail Tag"),
        ("Tag Base", "Tag Plus"),
    ]
    assert _groups(found.companies, "Same name") == [("ACME ", "Acme")]
    assert _groups(found.companies, "Same registrable domain") == [("ACME ", "Acme EU")]
    same_phone = next(g for g in found.contacts if g.reason == "Same phone")
    assert same_phone.key == "15550100199"
    # the older one is offered as the one to keep
    assert same_phone.members[0].record_id < same_phone.members[1].record_id


def test_a_company_with_two_domains_of_one_registrable_domain_is_no_duplicate(session, make_company):
    acme = make_company("Acme", domain="acme.co.uk")
    acme.domains.append(CompanyDomain(domain="mail.acme.co.uk"))
    session.commit()
    assert find_duplicates(session).empty
