"""The panel's security findings, each checked the way an attacker would try it: re-filing someone else's
email, locking someone out from another address, telling known from unknown emails by timing, reusing a
session cookie after logout or a password change, running an inline script, hiding behind a proxy."""

from __future__ import annotations

import random
import re
import statistics
import time
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from admin.app import create_app
from admin.auth import THROTTLE_EXTENSION
from admin.throttle import ACCOUNT_ALARM, ADDRESS_FREE_FAILURES, FREE_FAILURES, LoginThrottle
from models.schema import Activity, Role, User
from settings import AdminSettings, DatabaseSettings, Secret, Settings
from tests.admin.conftest import PASSWORD, csrf_from, fresh, sqlite_only
from tests.fixtures.database import TestDatabase
from tests.fixtures.factories import NOW

# ---- re-filing an email ---------------------------------------------------------------------------------


@sqlite_only
def test_a_rep_cannot_move_another_reps_email_onto_their_own_deal(
    app, session, make_user, make_contact, make_deal, make_email, login
):
    ann, bob = make_user(role=Role.REP, name="Ann"), make_user(role=Role.REP, name="Bob")
    bobs_contact = make_contact("Carol Client", email="carol@client.example", owner=bob)
    bobs_deal = make_deal(title="Bob's renewal", owner=bob, contacts=[bobs_contact])
    anns_deal = make_deal(title="Ann's deal", owner=ann)
    email = make_email("carol@client.example", subject="Confidential pricing")
    fresh(session)
    assert session.get(Activity, email.id).deal_id == bobs_deal.id  # the sync filed it on Bob's deal

    rep = login(ann)
    assert rep.get(f"/admin/records/email/{email.id}/link").status_code == 403
    refused = rep.post(f"/admin/records/email/{email.id}/link", {"deal_id": anns_deal.id})
    assert refused.status_code == 403
    fresh(session)
    assert session.get(Activity, email.id).deal_id == bobs_deal.id
    assert "Confidential pricing" not in rep.get(f"/admin/records/deal/{anns_deal.id}").text

    # Bob, whose deal it is on, may file it elsewhere; so may a manager
    other = make_deal(title="Bob's upsell", owner=bob, contacts=[bobs_contact])
    moved = login(bob).post(f"/admin/records/email/{email.id}/link", {"deal_id": other.id})
    assert moved.status_code == 302
    fresh(session)
    assert session.get(Activity, email.id).deal_id == other.id


@sqlite_only
def test_an_email_waiting_for_a_deal_offers_linking_only_to_those_who_own_its_records(
    app, session, make_user, make_contact, make_deal, make_email, login
):
    ann, bob = make_user(role=Role.REP), make_user(role=Role.REP)
    contact = make_contact("Dora", email="dora@client.example", owner=bob)
    make_deal(title="One", owner=bob, contacts=[contact])
    make_deal(title="Two", owner=bob, contacts=[contact])
    email = make_email("dora@client.example", subject="Which deal?")
    assert email.needs_deal_review
    button = f"/admin/records/email/{email.id}/link"
    assert button not in login(ann).get(f"/admin/records/contact/{contact.id}").text
    assert button in login(bob).get(f"/admin/records/contact/{contact.id}").text


# ---- the login throttle ---------------------------------------------------------------------------------


def attempt(
    app: Flask, email: str, password: str, *, address: str = "127.0.0.1", forwarded_for: str | None = None
) -> int:
    """One login from a fresh browser at `address` (optionally through a proxy that says X-Forwarded-For)."""
    client = app.test_client()
    environ = {"REMOTE_ADDR": address}
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = client.get("/login", environ_base=environ, headers=headers)
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_from(page.text)},
        environ_base=environ,
        headers=headers,
    )
    return response.status_code


def earlier_failures(app: Flask, count: int, *, accounts: list[str], addresses: list[str]) -> None:
    """Failures recorded before the test's own attempts (each real attempt costs a slow Argon2 check)."""
    throttle = app.extensions[THROTTLE_EXTENSION]
    for n in range(count):
        throttle.failed(accounts[n % len(accounts)], addresses[n % len(addresses)], NOW)


@sqlite_only
def test_nobody_can_lock_the_right_password_out_from_another_address(app, make_user):
    victim = make_user(role=Role.REP)
    earlier_failures(app, ACCOUNT_ALARM + 10, accounts=[victim.email], addresses=["198.51.100.7"])
    assert attempt(app, victim.email, "guess guess guess", address="198.51.100.7") == 429
    assert attempt(app, victim.email, PASSWORD, address="198.51.100.7") == 429
    assert attempt(app, victim.email, PASSWORD, address="203.0.113.5") == 302


@sqlite_only
def test_an_address_spraying_many_accounts_is_slowed_down(app, make_user):
    sprayed = [f"nobody{n}@team.example" for n in range(ADDRESS_FREE_FAILURES)]
    earlier_failures(app, ADDRESS_FREE_FAILURES, accounts=sprayed, addresses=["198.51.100.9"])
    assert attempt(app, "one-more@team.example", "guess guess", address="198.51.100.9") == 401
    user = make_user(role=Role.REP)
    assert attempt(app, user.email, PASSWORD, address="198.51.100.9") == 429
    assert attempt(app, user.email, PASSWORD, address="203.0.113.6") == 302


@sqlite_only
def test_many_addresses_guessing_one_account_each_wait_after_their_own_failure(app, make_user):
    victim = make_user(role=Role.REP)
    botnet = [f"198.51.100.{n + 1}" for n in range(ACCOUNT_ALARM)]
    earlier_failures(app, ACCOUNT_ALARM, accounts=[victim.email], addresses=botnet)
    assert attempt(app, victim.email, "guess guess", address="192.0.2.1") == 401
    assert attempt(app, victim.email, PASSWORD, address="192.0.2.1") == 429  # it failed: it waits
    assert attempt(app, victim.email, PASSWORD, address="192.0.2.2") == 302  # it did not: it is let in


def test_the_throttle_never_refuses_an_address_that_has_not_failed():
    """Random storms of failures over accounts and addresses: a fresh address is never told to wait."""
    throttle = LoginThrottle()
    rng = random.Random(7)
    accounts = [f"user{n}@team.example" for n in range(5)]
    moment = NOW
    for _ in range(3000):
        moment += timedelta(seconds=rng.choice((0, 1, 5, 60)))
        throttle.failed(rng.choice(accounts), f"10.0.0.{rng.randrange(60)}", moment)
        assert throttle.locked_for(rng.choice(accounts), "192.0.2.200", moment) is None
    # and the attackers themselves were slowed down
    assert any(throttle.locked_for(a, f"10.0.0.{n}", moment) for a in accounts for n in range(60))


def test_the_throttle_lockout_doubles_and_is_forgotten():
    throttle = LoginThrottle()
    account, address = "jane@team.example", "10.0.0.1"
    for _ in range(FREE_FAILURES):
        throttle.failed(account, address, NOW)
    assert throttle.locked_for(account, address, NOW) is None
    throttle.failed(account, address, NOW)
    assert throttle.locked_for(account, address, NOW) == timedelta(seconds=30)
    throttle.failed(account, address, NOW)
    assert throttle.locked_for(account, address, NOW) == timedelta(seconds=60)
    assert throttle.locked_for(account, address, NOW + timedelta(seconds=61)) is None
    throttle.succeeded(account, address)
    throttle.failed(account, address, NOW + timedelta(seconds=61))
    assert throttle.locked_for(account, address, NOW + timedelta(seconds=61)) is None


@sqlite_only
def test_unknown_and_known_emails_take_the_same_time_to_refuse(app, make_user):
    """Before the fix an unknown email was refused ~40x faster (no Argon2 work): accounts could be listed."""
    known = make_user(role=Role.REP)
    attempt(app, "warm-up@team.example", "x", address="192.0.2.99")  # the dummy hash is made once
    known_times: list[float] = []
    unknown_times: list[float] = []
    for n in range(5):  # interleaved, one address each, so load on the machine hits both alike
        for email, times, address in (
            (known.email, known_times, f"192.0.2.{n + 1}"),
            (f"nobody{n}@team.example", unknown_times, f"192.0.2.{n + 101}"),
        ):
            started = time.perf_counter()
            assert attempt(app, email, "wrong password", address=address) == 401
            times.append(time.perf_counter() - started)
    ratio = statistics.median(unknown_times) / statistics.median(known_times)
    assert 0.5 < ratio < 2.0, (unknown_times, known_times)


# ---- trusted proxies ------------------------------------------------------------------------------------


def app_behind_proxies(db: TestDatabase, hops: int) -> Flask:
    settings = Settings(
        source="test",
        database=DatabaseSettings(url=db.url),
        admin=AdminSettings(secret_key=Secret("t" * 48, "test"), trusted_proxy_hops=hops),
    )
    application = create_app(settings, db.sessions, clock=lambda: NOW)
    application.config["TESTING"] = True
    return application


@sqlite_only
def test_behind_a_trusted_proxy_the_throttle_sees_each_client_address(db, make_user):
    """Without ProxyFix every client had the proxy's address: one attacker locked everyone out."""
    app = app_behind_proxies(db, hops=1)
    user = make_user(role=Role.REP)
    earlier_failures(app, FREE_FAILURES, accounts=[user.email], addresses=["198.51.100.7"])
    proxied = {"address": "127.0.0.1"}
    assert attempt(app, user.email, "guess guess", **proxied, forwarded_for="198.51.100.7") == 401
    assert attempt(app, user.email, PASSWORD, **proxied, forwarded_for="198.51.100.7") == 429
    assert attempt(app, user.email, PASSWORD, **proxied, forwarded_for="203.0.113.5") == 302


@sqlite_only
def test_a_trusted_proxy_takes_only_its_own_hop_from_the_header(db, make_user):
    """A client sending its own X-Forwarded-For cannot pick its address: the proxy appends the real one."""
    app = app_behind_proxies(db, hops=1)
    user = make_user(role=Role.REP)
    earlier_failures(app, FREE_FAILURES, accounts=[user.email], addresses=["198.51.100.7"])
    proxied = {"address": "127.0.0.1"}
    # what the proxy forwards: the client's forgery first, then the address it really came from
    assert attempt(app, user.email, "guess guess", **proxied, forwarded_for="10.9.9.9, 198.51.100.7") == 401
    assert attempt(app, user.email, PASSWORD, **proxied, forwarded_for="1.2.3.4, 198.51.100.7") == 429


@sqlite_only
def test_without_trusted_proxies_a_forged_forwarded_for_header_changes_nothing(db, make_user):
    app = app_behind_proxies(db, hops=0)
    user = make_user(role=Role.REP)
    earlier_failures(app, FREE_FAILURES + 1, accounts=[user.email], addresses=["198.51.100.7"])
    assert attempt(app, user.email, PASSWORD, address="198.51.100.7", forwarded_for="203.0.113.9") == 429


# ---- sessions -------------------------------------------------------------------------------------------


def logged_in(app: Flask, user: User, password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    page = client.get("/login")
    response = client.post(
        "/login", data={"email": user.email, "password": password, "csrf_token": csrf_from(page.text)}
    )
    assert response.status_code == 302
    return client


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("threadline_session")
    assert cookie is not None
    return cookie.value


def with_cookie(app: Flask, value: str) -> FlaskClient:
    """Another browser holding a copy of a session cookie (stolen, or left on a shared machine)."""
    client = app.test_client()
    client.set_cookie("threadline_session", value)
    return client


@sqlite_only
def test_login_starts_a_new_session(app, make_user):
    user = make_user(role=Role.REP)
    client = app.test_client()
    page = client.get("/login")
    before_token = csrf_from(page.text)
    with client.session_transaction() as planted:
        planted["planted_by_attacker"] = "x"
    client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": before_token})
    with client.session_transaction() as after:
        assert "planted_by_attacker" not in after
    # the token from before login belongs to the old session: refused
    stale = client.post("/admin/notifications/read", data={"csrf_token": before_token})
    assert stale.status_code == 400
    assert client.get("/admin/").status_code == 200


@sqlite_only
def test_a_copied_session_cookie_stops_working_at_logout(app, make_user):
    user = make_user(role=Role.REP)
    client = logged_in(app, user)
    copy = with_cookie(app, session_cookie(client))
    assert copy.get("/admin/").status_code == 200
    token = csrf_from(client.get("/admin/notifications/").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert copy.get("/admin/").status_code == 302
    assert copy.get("/admin/").headers["Location"].startswith("/login")


@sqlite_only
@pytest.mark.parametrize("change", ["password", "role", "deactivate"])
def test_a_new_password_or_role_ends_the_users_other_sessions(app, session, make_user, login, change):
    rep = make_user(role=Role.REP, email="rita@team.example", name="Rita")
    rep_browser = logged_in(app, rep)
    assert rep_browser.get("/admin/").status_code == 200
    admin_user = make_user(role=Role.ADMIN)
    admin = login(admin_user)
    form = {"email": rep.email, "name": "Rita", "role": "rep", "active": "y", "alerts_enabled": "y"}
    if change == "password":
        form["new_password"] = "a brand new password"
    elif change == "role":
        form["role"] = "manager"
    else:
        del form["active"]
    assert admin.post(f"/admin/user/edit/?id={rep.id}", form).status_code == 302
    assert rep_browser.get("/admin/").status_code == 302
    # an unrelated edit (the name) leaves sessions alone
    other = make_user(role=Role.REP, name="Otto")
    otto = logged_in(app, other)
    admin.post(
        f"/admin/user/edit/?id={other.id}",
        {"email": other.email, "name": "Otto Renamed", "role": "rep", "active": "y"},
    )
    assert otto.get("/admin/").status_code == 200
    # and the admin's own session survives their edits of others
    assert admin.get("/admin/").status_code == 200


@sqlite_only
def test_an_admin_changing_their_own_password_stays_logged_in_here_only(app, session, make_user, login):
    me = make_user(role=Role.ADMIN, email="boss@team.example", name="Boss")
    here = login(me)
    elsewhere = logged_in(app, me)
    changed = here.post(
        f"/admin/user/edit/?id={me.id}",
        {
            "email": me.email,
            "name": "Boss",
            "role": "admin",
            "active": "y",
            "new_password": "another long one",
        },
    )
    assert changed.status_code == 302
    assert here.get("/admin/").status_code == 200
    assert elsewhere.get("/admin/").status_code == 302
    fresh(session)
    assert session.scalar(select(User.session_version).where(User.id == me.id)) == 1


# ---- Content-Security-Policy ------------------------------------------------------------------------------

INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>", re.I)


@sqlite_only
def test_scripts_run_only_from_files_or_with_the_pages_nonce(
    app, session, make_user, make_deal, make_contact, make_email, login
):
    user = make_user(role=Role.ADMIN)
    deal = make_deal(owner=user)
    contact = make_contact("Eve", email="eve@client.example", owner=user)
    make_email("eve@client.example")
    browser = login(user)
    pages = [
        "/admin/",
        "/admin/board/",
        "/admin/contact/",
        "/admin/contact/new/",
        "/admin/deal/",
        f"/admin/deal/edit/?id={deal.id}",
        "/admin/task/",
        "/admin/activity/",
        "/admin/user/",
        "/admin/pipelines/",
        f"/admin/pipelines/stage/{deal.stage_id}/remove",
        "/admin/sync/",
        "/admin/notifications/",
        f"/admin/records/deal/{deal.id}",
        f"/admin/records/contact/{contact.id}",
        "/admin/nothing-here",
    ]
    responses = [(url, browser.get(url)) for url in pages] + [("/login", app.test_client().get("/login"))]
    for url, response in responses:
        policy = response.headers["Content-Security-Policy"]
        scripts = re.search(r"script-src ([^;]*)", policy)
        assert scripts is not None and "'unsafe-inline'" not in scripts.group(1), (url, policy)
        nonce = re.search(r"'nonce-([^']+)'", scripts.group(1))
        html = response.text
        assert INLINE_HANDLER.search(html) is None, (url, INLINE_HANDLER.search(html))
        for attributes in SCRIPT_TAG.findall(html):
            if "src=" not in attributes:  # inline: must carry this response's nonce
                assert nonce is not None and f'nonce="{nonce.group(1)}"' in attributes, (url, attributes)
    # each response has its own nonce
    nonces = {re.search(r"'nonce-([^']+)'", r.headers["Content-Security-Policy"] or "") for _, r in responses}
    assert len({n.group(1) for n in nonces if n}) > 1
