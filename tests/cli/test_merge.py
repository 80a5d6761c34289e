"""`threadline merge contacts|companies KEEP OTHER`: a preview, a dry run, the merge, and clear errors."""

import pytest
from sqlalchemy import select

from models.merge import MergeKind, kept_id_of
from models.schema import Company, Contact


def test_merge_contacts_by_address_with_a_dry_run_first(cli, db, make_contact, make_company):
    acme = make_company("Acme", domain="acme.example")
    keep = make_contact("Jane Doe", email="jane@acme.example")
    other = make_contact("Jane D.", email="j.doe@gmail.com", phone="+44 20 7946 0000", company=acme)

    dry = cli("merge", "contacts", "jane@acme.example", "J.Doe@gmail.com", "--dry-run")
    assert dry.code == 0, dry.err
    assert f"Merge contact Jane D. (#{other.id}) into Jane Doe (#{keep.id}):" in dry.out
    assert "moves: 1 address" in dry.out
    assert "fills phone: +44 20 7946 0000" in dry.out and "fills company: Acme" in dry.out
    assert "Dry run: nothing changed." in dry.out
    with db.sessions() as session:
        assert session.get(Contact, other.id) is not None

    done = cli("merge", "contacts", str(keep.id), str(other.id))
    assert done.code == 0, done.err
    assert f"Merged: contact #{other.id} now leads to #{keep.id}." in done.out
    with db.sessions() as session:
        kept = session.get(Contact, keep.id)
        assert [e.email for e in kept.emails] == ["jane@acme.example", "j.doe@gmail.com"]
        assert (kept.phone, kept.company_id) == ("+44 20 7946 0000", acme.id)
        assert kept_id_of(session, MergeKind.CONTACT, other.id) == keep.id


def test_merge_companies_by_domain(cli, db, make_company):
    keep = make_company("Acme", domain="acme.example")
    other = make_company("Acme Ltd", domain="acme.co.uk")
    result = cli("merge", "companies", "acme.example", "ACME.CO.UK")
    assert result.code == 0, result.err
    with db.sessions() as session:
        assert session.scalars(select(Company.id)).all() == [keep.id]
        domains = session.get(Company, keep.id).domains
        assert sorted(d.domain for d in domains) == ["acme.co.uk", "acme.example"]
    again = cli("merge", "companies", str(keep.id), str(other.id))
    assert again.code == 1
    assert again.err_lines == [f"threadline: company {other.id} was merged into company {keep.id}"]


def test_mistakes_are_one_line_errors(cli, make_contact, capsys):
    jane = make_contact(email="jane@acme.example")
    for args, message in (
        (("merge", "contacts", "jane@acme.example", "nobody@acme.example"),
         "threadline: no contact has the address 'nobody@acme.example'"),
        (("merge", "contacts", str(jane.id), str(jane.id)), "threadline: choose two different contacts"),
        (("merge", "contacts", str(jane.id), "424242"), "threadline: no contact with id 424242"),
        (("merge", "companies", "1", "nowhere.example"), "threadline: no company with id 1"),
    ):  # fmt: skip
        result = cli(*args)
        assert (result.code, result.err_lines) == (1, [message]), result.err
    with pytest.raises(SystemExit) as exit_:
        cli("merge", "people", "1", "2")
    assert exit_.value.code == 2 and "invalid choice: 'people'" in capsys.readouterr().err
