"""Matching rules on headers alone: direction, participants, who may become a contact, what is skipped, and
the final decision against the contacts a batch already has."""

from __future__ import annotations

from daemon.matching import (
    MatchRules,
    Participants,
    Team,
    build_rules,
    decide,
    load_freemail_domains,
    read_participants,
)
from daemon.parsing.headers import parse_headers
from models.messages import Direction, NewContact, Placement, SkipReason
from settings import MatchingSettings
from tests.daemon.conftest import build_message


def rules(
    create_contacts: str = "sent",
    ignore: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
    max_recipients: int = 100,
) -> MatchRules:
    matching = MatchingSettings(create_contacts=create_contacts, ignore=ignore, max_recipients=max_recipients)
    return build_rules(matching, Team(("team.example",), ("boss@personal.example", *extra)))


def read(raw: bytes, r: MatchRules | None = None) -> Participants:
    return read_participants(parse_headers(raw), r or rules())


def test_outbound_mail_makes_its_recipients_contacts() -> None:
    raw = build_message(
        from_="Jane Rep <jane@team.example>",
        to="Pat Prospect <pat@acme.example>",
        cc=["bob@team.example", "kim@acme.example"],
        bcc="lee@other.example",
    )
    participants = read(raw)
    assert participants.direction == Direction.OUT
    assert participants.sender == "jane@team.example"
    emails = ["pat@acme.example", "kim@acme.example", "lee@other.example"]
    assert [p.email for p in participants.external] == emails
    assert [p.email for p in participants.creatable] == emails
    assert participants.external[0].name == "Pat Prospect"
    placement = decide(participants, known=set())
    assert isinstance(placement, Placement)
    assert placement.create[0] == NewContact("pat@acme.example", "Pat Prospect", "acme.example")
    assert [c.email for c in placement.create] == emails and placement.link == ()
    assert placement.author_email == "jane@team.example"


def test_known_contacts_are_linked_and_only_the_unknown_created() -> None:
    raw = build_message(from_="jane@team.example", to=["pat@acme.example", "new@acme.example"])
    placement = decide(read(raw), known={"pat@acme.example"})
    assert isinstance(placement, Placement)
    assert placement.link == ("pat@acme.example",)
    assert [c.email for c in placement.create] == ["new@acme.example"]


def test_inbound_from_unknown_sender_is_skipped_under_sent_but_creates_under_sent_and_received() -> None:
    raw = build_message(
        from_="Pat <pat@acme.example>", to="jane@team.example", bcc="hidden@elsewhere.example"
    )
    participants = read(raw)
    assert participants.direction == Direction.IN
    # Bcc of inbound mail is not a participant
    assert [p.email for p in participants.external] == ["pat@acme.example"]
    assert decide(participants, known=set()) == SkipReason.NO_CONTACT
    assert isinstance(decide(participants, known={"pat@acme.example"}), Placement)

    received = read(raw, rules("sent_and_received"))
    assert [p.email for p in received.creatable] == ["pat@acme.example"]
    assert isinstance(decide(received, known=set()), Placement)


def test_create_contacts_none_only_links_known_contacts() -> None:
    raw = build_message(from_="jane@team.example", to=["pat@acme.example", "new@acme.example"])
    participants = read(raw, rules("none"))
    assert participants.creatable == ()
    assert decide(participants, known=set()) == SkipReason.NO_CONTACT
    placement = decide(participants, known={"pat@acme.example"})
    assert isinstance(placement, Placement)
    assert placement.link == ("pat@acme.example",) and placement.create == ()


def test_mail_among_internal_people_is_not_logged() -> None:
    raw = build_message(from_="jane@team.example", to=["bob@eu.team.example", "boss@personal.example"])
    participants = read(raw)
    assert participants.skip == SkipReason.INTERNAL and participants.lookup == ()
    assert decide(participants, known={"bob@eu.team.example"}) == SkipReason.INTERNAL


def test_sender_falls_back_to_the_sender_header() -> None:
    raw = build_message(
        from_="undisclosed-recipients:;", to="pat@acme.example", headers={"Sender": "jane@team.example"}
    )
    participants = read(raw)
    assert participants.direction == Direction.OUT
    assert [p.email for p in participants.creatable] == ["pat@acme.example"]


def test_automated_mail_creates_nobody_and_is_logged_only_for_known_contacts() -> None:
    for headers in (
        {"List-Id": "<news.acme.example>"},
        {"Precedence": "bulk"},
        {"Auto-Submitted": "auto-replied"},
    ):
        raw = build_message(from_="jane@team.example", to="pat@acme.example", headers=headers)
        participants = read(raw, rules("sent_and_received"))
        assert participants.automated, headers
        assert participants.creatable == ()
        assert decide(participants, known=set()) == SkipReason.AUTOMATED
        assert isinstance(decide(participants, known={"pat@acme.example"}), Placement)

    noreply = read(
        build_message(from_="no-reply@acme.example", to="jane@team.example"), rules("sent_and_received")
    )
    assert noreply.automated and noreply.creatable == ()
    daemon = read(build_message(from_="MAILER-DAEMON@acme.example", to="jane@team.example"))
    assert daemon.automated == "From address mailer-daemon@acme.example"


def test_mail_over_max_recipients_is_bulk_links_existing_contacts_only_and_reads_no_more() -> None:
    recipients = [f"person{i}@client{i}.example" for i in range(2000)]
    raw = build_message(from_="jane@team.example", to=recipients)
    participants = read(raw, rules(max_recipients=50))
    assert participants.bulk and participants.creatable == ()
    assert len(participants.external) == 50  # the rest is not considered
    assert decide(participants, known=set()) == SkipReason.BULK
    placement = decide(participants, known={"person7@client7.example", "person1999@client1999.example"})
    assert isinstance(placement, Placement) and placement.bulk
    assert placement.link == ("person7@client7.example",) and placement.create == ()

    small = read(build_message(from_="jane@team.example", to=recipients[:50]), rules(max_recipients=50))
    assert not small.bulk and len(small.creatable) == 50


def test_ignore_globs_match_addresses_and_domains() -> None:
    r = rules(ignore=("*@newsletters.example", "spam.example", "*.tracking.example"))
    raw = build_message(
        from_="jane@team.example",
        to=["a@newsletters.example", "b@spam.example", "c@eu.tracking.example", "pat@acme.example"],
    )
    assert [p.email for p in read(raw, r).external] == ["pat@acme.example"]
    only_ignored = read(build_message(from_="jane@team.example", to="b@spam.example"), r)
    assert only_ignored.skip == SkipReason.IGNORED
    assert decide(only_ignored, known={"b@spam.example"}) == SkipReason.IGNORED


def test_freemail_contacts_get_no_company_and_others_the_registrable_domain() -> None:
    raw = build_message(
        from_="jane@team.example",
        to=["sam@gmail.com", "kim@yahoo.co.uk", "lee@eu.mail.acme-corp.co.uk"],
    )
    placement = decide(read(raw), known=set())
    assert isinstance(placement, Placement)
    assert {c.email: c.company_domain for c in placement.create} == {
        "sam@gmail.com": None,
        "kim@yahoo.co.uk": None,
        "lee@eu.mail.acme-corp.co.uk": "acme-corp.co.uk",
    }


def test_freemail_domains_and_globs() -> None:
    freemail = load_freemail_domains(extra=["Example-Free.TEST  # added by this deployment"])
    r = MatchRules(freemail=freemail)
    assert len(freemail) >= 60
    assert r.is_freemail("gmail.com")
    assert r.is_freemail("yahoo.co.uk")
    assert r.is_freemail("gmx.de")
    assert r.is_freemail("Hotmail.FR")
    assert r.is_freemail("example-free.test")
    assert not r.is_freemail("acme.com")
    assert not r.is_freemail("")


def test_broken_and_group_address_headers_do_not_crash() -> None:
    raw = (
        b"From: Jane <jane@team.example>\r\n"
        b"To: unlisted-recipients:; (no To-header on input)\r\n"
        b'Cc: "Broken <<pat@acme.example\r\n'
        b"Subject: odd\r\n\r\nbody\r\n"
    )
    participants = read(raw)
    assert participants.direction == Direction.OUT
    assert all(p.email.count("@") == 1 for p in participants.external)


def test_display_names_are_cleaned() -> None:
    raw = build_message(
        from_="jane@team.example",
        to='"pat@acme.example" <pat@acme.example>, "  Kim   Lee " <kim@acme.example>',
    )
    names = {p.email: p.name for p in read(raw).external}
    assert names == {"pat@acme.example": "", "kim@acme.example": "Kim Lee"}
