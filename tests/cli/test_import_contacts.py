"""`threadline import contacts`: bad rows reported by line and skipped, good rows kept, re-import updates."""

from sqlalchemy import func, select

from models.schema import Company, CompanyDomain, Contact, ContactEmail

ADD_USER = "(add them with `threadline user add`)"
HEADER = "name,email,phone,title,company,company_domain,owner,lead_source\n"


def contacts_by_email(db):
    with db.sessions() as session:
        rows = session.execute(select(ContactEmail.email, Contact).join(Contact)).all()
        result = {}
        for email, contact in rows:
            result[email] = {
                "name": contact.name,
                "phone": contact.phone,
                "title": contact.title,
                "company": contact.company.name if contact.company else None,
                "domains": [d.domain for d in contact.company.domains] if contact.company else [],
                "owner": contact.owner.email if contact.owner else None,
                "lead_source": contact.lead_source,
                "emails": [e.email for e in contact.emails],
                "id": contact.id,
            }
        return result


def count(db, model):
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_good_rows_are_kept_and_bad_rows_reported_with_their_line(cli, db, write_csv, make_user):
    make_user("rep@team.example")
    path = write_csv(
        "people.csv",
        HEADER
        + (
            # line 2
            "Jane Doe,Jane@Acme.com; J.Doe@ACME.com ,+1 555 0100,CEO,Acme,acme.com,rep@team.example,Website\n"
            'Bob Stone,bob@globex.example,,"Head of\nSales",Globex,,,\n'  # 3-4: a quoted field over two lines
            "Bad Email,not-an-email,,,,,,\n"  # 5
            "Ghost,ghost@nowhere.example,,,,,nobody@team.example,\n"  # 6
            '"Carol\n""CJ""\nWhite",carol@initech.example,,,,initech.example,,\n'  # 7-9
            "No Address,,,,,,,\n"  # 10
            "\n"  # 11: blank lines are not rows
            "Dan,dan@initech.example,,,,initech.example,,Referral\n"  # 12
        ),
    )
    result = cli("import", "contacts", str(path))
    assert result.code == 1
    assert result.err_lines == [
        f"{path}:5: skipped: 'not-an-email' is not an email address",
        f"{path}:6: skipped: owner 'nobody@team.example' is not a Threadline user {ADD_USER}",
        f"{path}:10: skipped: no email address (the email column is empty)",
        "threadline: 3 bad row(s) skipped (listed above); the good rows were imported",
    ]
    assert result.out == f"{path}: contacts: 4 created, 0 updated, 3 skipped\n"
    people = contacts_by_email(db)
    assert sorted(people) == [
        "bob@globex.example",
        "carol@initech.example",
        "dan@initech.example",
        "j.doe@acme.com",
        "jane@acme.com",
    ]
    jane = people["jane@acme.com"]
    assert jane == {
        "name": "Jane Doe",
        "phone": "+1 555 0100",
        "title": "CEO",
        "company": "Acme",
        "domains": ["acme.com"],
        "owner": "rep@team.example",
        "lead_source": "Website",
        "emails": ["jane@acme.com", "j.doe@acme.com"],
        "id": jane["id"],
    }
    assert people["j.doe@acme.com"]["id"] == jane["id"]
    assert people["bob@globex.example"]["title"] == "Head of\nSales"
    assert (people["bob@globex.example"]["company"], people["bob@globex.example"]["domains"]) == (
        "Globex",
        [],
    )
    assert people["carol@initech.example"]["name"] == 'Carol\n"CJ"\nWhite'
    # the company is created once (named after its domain) and found again by domain on line 12
    assert people["carol@initech.example"]["company"] == people["dan@initech.example"]["company"] == "Initech"
    assert count(db, Company) == 3


def test_reimport_updates_instead_of_duplicating(cli, db, write_csv):
    first = write_csv(
        "first.csv",
        HEADER + "Jane Doe,jane@acme.com,+1 555 0100,CEO,Acme,acme.com,,Website\n"
        "Bob,bob@globex.example,,,,,,\n",
    )
    assert cli("import", "contacts", str(first)).code == 0
    again = cli("import", "contacts", str(first))
    assert (again.code, again.out) == (0, f"{first}: contacts: 0 created, 2 updated, 0 skipped\n")
    # a later file: a new address for Jane (matched by her known one), an empty phone keeps the old phone
    second = write_csv("second.csv", HEADER + "Jane D.,JANE@acme.com;jane.doe@acme.com,,CTO,,,,\n")
    result = cli("import", "contacts", str(second))
    assert (result.code, result.out) == (0, f"{second}: contacts: 0 created, 1 updated, 0 skipped\n")
    people = contacts_by_email(db)
    assert count(db, Contact) == 2
    jane = people["jane.doe@acme.com"]
    assert (jane["name"], jane["title"], jane["phone"], jane["company"]) == (
        "Jane D.",
        "CTO",
        "+1 555 0100",
        "Acme",
    )
    assert jane["emails"] == ["jane@acme.com", "jane.doe@acme.com"]


def test_addresses_of_two_different_contacts_make_a_bad_row(cli, db, write_csv, make_contact):
    first = make_contact("Ann", email="ann@acme.com")
    make_contact("Ben", email="ben@acme.com")
    path = write_csv(
        "merge.csv", "email,name\nann@acme.com;ben@acme.com,Ann or Ben\nann@acme.com,Ann Again\n"
    )
    result = cli("import", "contacts", str(path))
    assert result.code == 1
    assert result.err_lines[0].startswith(
        f"{path}:2: skipped: the addresses ann@acme.com; ben@acme.com belong to different contacts (contact #"
    )
    assert result.out == f"{path}: contacts: 0 created, 1 updated, 1 skipped\n"
    assert contacts_by_email(db)["ann@acme.com"]["name"] == "Ann Again"
    assert contacts_by_email(db)["ann@acme.com"]["id"] == first.id


def test_first_and_last_name_columns_and_company_found_by_domain(cli, db, write_csv, make_company):
    existing = make_company("Initech Corporation", domain="initech.example")
    path = write_csv(
        "split.csv",
        "\ufefffirst_name,last_name,email,company,company_domain\n"  # BOM from Excel
        "Peter,Gibbons,peter@initech.example,Initech,initech.example\n"
        "Samir,,samir@initech.example,Initech Corporation,\n"
        "Milton,Waddams,milton@stapler.example,Initech Corporation,stapler.example\n",
    )
    result = cli("import", "contacts", str(path))
    assert (result.code, result.err) == (0, "")
    people = contacts_by_email(db)
    assert people["peter@initech.example"]["name"] == "Peter Gibbons"
    assert people["samir@initech.example"]["name"] == "Samir"
    for email in ("peter@initech.example", "samir@initech.example", "milton@stapler.example"):
        assert people[email]["company"] == "Initech Corporation"
    # found by name with a new domain: the domain is added, so the sync files that domain's mail there too
    assert count(db, Company) == 1
    with db.sessions() as session:
        domains = session.scalars(select(CompanyDomain.domain).where(CompanyDomain.company_id == existing.id))
        assert sorted(domains) == ["initech.example", "stapler.example"]


def test_unknown_columns_warn_once_and_name_defaults_from_the_address(cli, db, write_csv):
    path = write_csv("extra.csv", "email,Shoe Size,favourite_color\nmary.major@acme.com,42,blue\n")
    result = cli("import", "contacts", str(path))
    assert result.code == 0
    assert result.err_lines == [f"{path}: ignoring unknown columns: shoe_size, favourite_color"]
    assert contacts_by_email(db)["mary.major@acme.com"]["name"] == "Mary Major"


def test_file_level_problems_are_one_line_exit_2_and_import_nothing(cli, db, write_csv, tmp_path):
    no_email = write_csv("no-email.csv", "name,phone\nJane,123\n")
    result = cli("import", "contacts", str(no_email))
    assert result.code == 2
    assert result.err == f"threadline: {no_email}: the header has no 'email' column (found: name, phone)\n"

    latin1 = write_csv(
        "latin1.csv", "name,email\nJane,jane@acme.com\nJosé,jose@acme.com\n", encoding="latin-1"
    )
    result = cli("import", "contacts", str(latin1))
    assert result.code == 2
    assert result.err == (f"threadline: {latin1}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8 CSV\n")

    missing = tmp_path / "missing.csv"
    result = cli("import", "contacts", str(missing))
    assert result.code == 2
    assert result.err == f"threadline: {missing}: cannot read the file: No such file or directory\n"
    assert count(db, Contact) == 0


def test_bad_rows_in_later_chunks_do_not_lose_earlier_or_later_rows(db, write_csv, now):
    from threadline.importer import import_contacts

    lines = [f"Person {i},person{i}@bulk.example,,,Bulk,bulk.example,,\n" for i in range(25)]
    lines[7] = "Broken,broken@,,,,,,\n"
    lines[18] = "Also Broken,also@bulk.example,,,,,nobody@team.example,\n"
    path = write_csv("bulk.csv", HEADER + "".join(lines))
    import io

    out, err = io.StringIO(), io.StringIO()
    assert import_contacts(db.sessions, path, now=now, out=out, err=err, chunk_rows=4) == 1
    assert err.getvalue().splitlines()[:2] == [
        f"{path}:9: skipped: 'broken@' is not an email address",
        f"{path}:20: skipped: owner 'nobody@team.example' is not a Threadline user {ADD_USER}",
    ]
    assert out.getvalue() == f"{path}: contacts: 23 created, 0 updated, 2 skipped\n"
    assert count(db, Contact) == 23
    assert count(db, Company) == 1


def test_company_domains_follow_the_one_domain_rule(cli, db, write_csv):
    path = write_csv(
        "domains.csv",
        HEADER
        + "Ann,ann@acme.co.uk,,,Acme,acme.co.uk,,\n"  # line 2
        + "Bea,bea@x.co.uk,,,Shared,co.uk,,\n"  # 3: a public suffix is nobody's domain
        + "Cy,cy@y.example,,,Bad,not a domain,,\n",  # 4
    )
    result = cli("import", "contacts", str(path))
    assert result.code == 1
    assert result.err_lines[:2] == [
        f"{path}:3: skipped: company_domain: co.uk is a public suffix shared by many owners, "
        "not a company's domain",
        f"{path}:4: skipped: company_domain: 'not a domain' is not a domain name",
    ]
    assert contacts_by_email(db)["ann@acme.co.uk"]["domains"] == ["acme.co.uk"]
