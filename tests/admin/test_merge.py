"""Merging in the panel: duplicates list, choosing, the preview, the merge POST, roles, CSRF, redirects."""

from sqlalchemy import select

from models.schema import Activity, ActivityKind, Contact, Role
from tests.admin.conftest import fresh, sqlite_only


def test_preview_then_merge_moves_the_history_and_the_old_page_leads_to_the_kept_one(
    login, session, make_user, make_contact, make_company, make_email
):
    manager = make_user(name="Maya Manager", role=Role.MANAGER)
    acme = make_company("Acme", domain="acme.example")
    keep = make_contact("Jane Doe", email="jane@acme.example", company=acme)
    other = make_contact("Jane D.", email="jane.doe@gmail.com", phone="+1 555 0100")
    make_email("jane.doe@gmail.com", subject="Re: pricing for 50 seats")
    browser = login(manager)

    page = browser.get(f"/admin/merge/contacts/preview?keep={keep.id}&other={other.id}")
    assert page.status_code == 200
    assert "Merge Jane D. into Jane Doe" in page.text
    assert '<td>Addresses</td><td class="text-right">1</td>' in page.text
    assert '<td>Emails</td><td class="text-right">1</td>' in page.text
    assert "<td>Phone</td><td>+1 555 0100</td>" in page.text
    fresh(session)
    assert session.get(Contact, other.id) is not None  # looking changes nothing

    done = browser.post("/admin/merge/contacts/merge", {"keep": keep.id, "other": other.id})
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/admin/records/contact/{keep.id}")
    kept_page = browser.get(done.headers["Location"])
    assert "Merged Jane D. into Jane Doe: 1 address, 1 email; fills phone." in kept_page.text
    assert "Re: pricing for 50 seats" in kept_page.text
    assert f"Merged contact Jane D. (#{other.id}) into this contact" in kept_page.text
    assert "Merged by Maya Manager" in kept_page.text

    old = browser.get(f"/admin/records/contact/{other.id}")
    assert old.status_code == 302 and old.headers["Location"].endswith(f"/admin/records/contact/{keep.id}")
    assert f"Contact #{other.id} was merged into this contact." in browser.get(old.headers["Location"]).text
    assert browser.get("/admin/records/contact/987654").status_code == 404
    fresh(session)
    assert [e.email for e in session.get(Contact, keep.id).emails] == [
        "jane@acme.example",
        "jane.doe@gmail.com",
    ]


@sqlite_only
def test_reps_merge_only_records_they_own_and_every_merge_needs_csrf(
    login, session, make_user, make_contact, make_company
):
    rep, other_rep = make_user(name="Rita Rep"), make_user(name="Otto Rep")
    mine = make_contact("Mine", owner=rep)
    also_mine = make_contact("Also mine", owner=rep)
    theirs = make_contact("Theirs", owner=other_rep)
    ids = [mine.id, also_mine.id, theirs.id]
    browser = login(rep)

    page = browser.get(f"/admin/merge/contacts/preview?keep={mine.id}&other={theirs.id}")
    assert (
        page.status_code == 200
        and 'id="merge-not-allowed"' in page.text
        and 'id="merge-form"' not in page.text
    )
    refused = browser.post("/admin/merge/contacts/merge", {"keep": mine.id, "other": theirs.id})
    assert refused.status_code == 403
    no_token = browser.client.post(
        "/admin/merge/contacts/merge", data={"keep": mine.id, "other": also_mine.id}
    )
    assert no_token.status_code == 400
    fresh(session)
    assert session.scalars(select(Contact.id).order_by(Contact.id)).all() == [
        mine.id,
        also_mine.id,
        theirs.id,
    ]

    assert (
        'id="merge-form"'
        in browser.get(f"/admin/merge/contacts/preview?keep={mine.id}&other={also_mine.id}").text
    )
    assert (
        browser.post("/admin/merge/contacts/merge", {"keep": mine.id, "other": also_mine.id}).status_code
        == 302
    )
    fresh(session)
    assert session.get(Contact, ids[1]) is None

    # companies: a rep's company and a company nobody owns
    own = make_company("Own Co", owner=rep)
    unowned = make_company("Own Co Ltd")
    assert (
        browser.post("/admin/merge/companies/merge", {"keep": own.id, "other": unowned.id}).status_code == 403
    )


@sqlite_only
def test_logged_out_visitors_see_nothing(app, make_contact):
    a, b = make_contact(), make_contact()
    client = app.test_client()
    for url in ("/admin/merge/", f"/admin/merge/contacts/preview?keep={a.id}&other={b.id}",
                f"/admin/merge/contacts/choose?keep={a.id}"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


@sqlite_only
def test_duplicates_list_leads_to_the_preview_and_the_list_action_too(
    login, session, make_user, make_contact, make_company
):
    admin = make_user(role=Role.ADMIN)
    acme = make_company("Acme", domain="acme.example")
    first = make_contact("Jane Doe", email="jane@acme.example", company=acme)
    second = make_contact("Jane Doe", email="j.doe@acme.example", company=acme)
    browser = login(admin)
    page = browser.get("/admin/merge/")
    assert "Same name at the same company" in page.text
    link = f"/admin/merge/contacts/preview?keep={first.id}&amp;other={second.id}"
    assert link in page.text
    assert "Merge Jane Doe into Jane Doe" in browser.get(link.replace("&amp;", "&")).text
    assert browser.get("/admin/merge/?rule=nonsense").status_code == 404
    companies = browser.get("/admin/merge/?rule=company-name")
    assert "No likely duplicates of this kind." in companies.text and "Jane Doe" not in companies.text

    action = browser.post(
        "/admin/contact/action/", {"action": "merge", "rowid": [str(second.id), str(first.id)]}
    )
    assert action.status_code == 302
    assert action.headers["Location"].endswith(
        f"/admin/merge/contacts/preview?keep={first.id}&other={second.id}"
    )
    one = browser.post("/admin/contact/action/", {"action": "merge", "rowid": [str(first.id)]})
    assert one.status_code == 302
    assert "Select exactly two records to merge." in browser.get(one.headers["Location"]).text

    # from a record page: "Merge with…", then a search
    record = browser.get(f"/admin/records/contact/{first.id}").text
    assert f"/admin/merge/contacts/choose?keep={first.id}" in record
    choose = browser.get(f"/admin/merge/contacts/choose?keep={first.id}&q=j.doe")
    assert f"/admin/merge/contacts/preview?keep={first.id}&amp;other={second.id}" in choose.text


@sqlite_only
def test_merging_companies_from_the_panel(login, session, make_user, make_company, make_contact):
    admin = make_user(role=Role.ADMIN, name="Ada Admin")
    keep = make_company("Acme", domain="acme.example")
    other = make_company("Acme UK", domain="acme.co.uk")
    make_contact("Bob", email="bob@acme.co.uk", company=other)
    keep_id = keep.id
    browser = login(admin)
    page = browser.get(f"/admin/merge/companies/preview?keep={keep.id}&other={other.id}")
    assert '<td>Domains</td><td class="text-right">1</td>' in page.text
    assert '<td>Contacts</td><td class="text-right">1</td>' in page.text
    done = browser.post("/admin/merge/companies/merge", {"keep": keep.id, "other": other.id})
    assert done.headers["Location"].endswith(f"/admin/records/company/{keep.id}")
    text = browser.get(done.headers["Location"]).text
    assert "acme.co.uk" in text and "Bob" in text
    fresh(session)
    merge = session.scalar(select(Activity).where(Activity.kind == ActivityKind.MERGE))
    assert merge.company_id == keep_id and "by Ada Admin" in merge.body
    same = browser.post("/admin/merge/companies/merge", {"keep": keep_id, "other": keep_id})
    assert "choose two different companies" in browser.get(same.headers["Location"]).text
