"""Matching rules on headers alone: direction, participants, who may become a contact, what is skipped."""

from __future__ import annotations

from daemon.matching import (
    SKIP_AUTOMATED,
    SKIP_IGNORED,
    SKIP_INTERNAL,
    SKIP_NO_CONTACT,
    MatchRules,
    build_rules,
    match_message,
)
from daemon.parse import load_freemail_domains, parse_headers
from tests.daemon.conftest import build_message


def rules(
    create_contacts: str = "sent", ignore: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> MatchRules:
    return build_rules(
        team_domains=["team.example"],
        internal_addresses=["boss@personal.example", *extra],
        create_contacts=create_contacts,
        ignore=ignore,
        freemail=load_freemail_domains(),
    )


def decide(raw: bytes, r: MatchRules | None = None):  # type: ignore[no-untyped-def]
    return match_message(parse_headers(raw), r or rules())


def test_outbound_mail_makes_its_recipients_contacts() -> None:
    raw = build_message(
        from_="Jane Rep <jane@team.example>",
        to="Pat Prospect <pat@acme.example>",
        cc=["bob@team.example", "kim@acme.example"],
        bcc="lee@other.example",
    )
    decision = decide(raw)
    assert decision.direction == "out"
    assert decision.sender == "jane@team.example"
    assert [p.email for p in decision.external] == [
        "pat@acme.example",
        "kim@acme.example",
        "lee@other.example",
    ]
    assert [p.email for p in decision.creatable] == [
        "pat@acme.example",
        "kim@acme.example",
        "lee@other.example",
    ]
    assert decision.external[0].name == "Pat Prospect"
    plan = decision.plan(known=set())
    assert plan.logs and [p.email for p in plan.create] == [p.email for p in decision.creatable]


def test_inbound_from_unknown_sender_is_skipped_under_sent_but_creates_under_sent_and_received() -> None:
    raw = build_message(
        from_="Pat <pat@acme.example>", to="jane@team.example", bcc="hidden@elsewhere.example"
    )
    decision = decide(raw)
    assert decision.direction == "in"
    # Bcc of inbound mail is not a participant
    assert [p.email for p in decision.participants] == ["pat@acme.example", "jane@team.example"]
    assert decision.plan(known=set()).skip_reason == SKIP_NO_CONTACT
    assert decision.plan(known={"pat@acme.example"}).logs

    received = decide(raw, rules("sent_and_received"))
    assert [p.email for p in received.creatable] == ["pat@acme.example"]
    assert received.plan(known=set()).logs


def test_create_contacts_none_only_links_known_contacts() -> None:
    raw = build_message(from_="jane@team.example", to=["pat@acme.example", "new@acme.example"])
    decision = decide(raw, rules("none"))
    assert decision.creatable == ()
    assert decision.plan(known=set()).skip_reason == SKIP_NO_CONTACT
    plan = decision.plan(known={"pat@acme.example"})
    assert [p.email for p in plan.link] == ["pat@acme.example"] and plan.create == ()


def test_mail_among_internal_people_is_not_logged() -> None:
    raw = build_message(from_="jane@team.example", to=["bob@eu.team.example", "boss@personal.example"])
    decision = decide(raw)
    assert decision.skip_reason == SKIP_INTERNAL
    assert decision.plan(known={"bob@eu.team.example"}).skip_reason == SKIP_INTERNAL


def test_sender_falls_back_to_the_sender_header() -> None:
    raw = build_message(
        from_="undisclosed-recipients:;", to="pat@acme.example", headers={"Sender": "jane@team.example"}
    )
    decision = decide(raw)
    assert decision.direction == "out"
    assert [p.email for p in decision.creatable] == ["pat@acme.example"]


def test_automated_mail_creates_nobody_and_is_logged_only_for_known_contacts() -> None:
    for headers in (
        {"List-Id": "<news.acme.example>"},
        {"Precedence": "bulk"},
        {"Auto-Submitted": "auto-replied"},
    ):
        raw = build_message(from_="jane@team.example", to="pat@acme.example", headers=headers)
        decision = decide(raw, rules("sent_and_received"))
        assert decision.automated, headers
        assert decision.creatable == ()
        assert decision.plan(known=set()).skip_reason == SKIP_AUTOMATED
        assert decision.plan(known={"pat@acme.example"}).logs

    noreply = decide(
        build_message(from_="no-reply@acme.example", to="jane@team.example"), rules("sent_and_received")
    )
    assert noreply.automated and noreply.creatable == ()
    daemon = decide(build_message(from_="MAILER-DAEMON@acme.example", to="jane@team.example"))
    assert daemon.automated


def test_ignore_globs_match_addresses_and_domains() -> None:
    r = rules(ignore=("*@newsletters.example", "spam.example", "*.tracking.example"))
    raw = build_message(
        from_="jane@team.example",
        to=["a@newsletters.example", "b@spam.example", "c@eu.tracking.example", "pat@acme.example"],
    )
    decision = decide(raw, r)
    assert [p.email for p in decision.external] == ["pat@acme.example"]
    only_ignored = decide(build_message(from_="jane@team.example", to="b@spam.example"), r)
    assert only_ignored.skip_reason == SKIP_IGNORED
    assert only_ignored.plan(known={"b@spam.example"}).skip_reason == SKIP_IGNORED


def test_freemail_domains_are_known_including_globs() -> None:
    r = rules()
    assert r.is_freemail("gmail.com")
    assert r.is_freemail("yahoo.co.uk")
    assert not r.is_freemail("acme.example")


def test_broken_and_group_address_headers_do_not_crash() -> None:
    raw = (
        b"From: Jane <jane@team.example>\r\n"
        b"To: unlisted-recipients:; (no To-header on input)\r\n"
        b'Cc: "Broken <<pat@acme.example\r\n'
        b"Subject: odd\r\n\r\nbody\r\n"
    )
    decision = decide(raw)
    assert decision.direction == "out"
    assert all(p.email.count("@") == 1 for p in decision.participants)


def test_display_names_are_cleaned() -> None:
    raw = build_message(
        from_="jane@team.example",
        to='"pat@acme.example" <pat@acme.example>, "  Kim   Lee " <kim@acme.example>',
    )
    decision = decide(raw)
    names = {p.email: p.name for p in decision.external}
    assert names == {"pat@acme.example": "", "kim@acme.example": "Kim Lee"}
