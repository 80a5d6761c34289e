"""The SMTP module against a real SMTP server (aiosmtpd on loopback): safe headers, one attempt per letter."""

from __future__ import annotations

import email
import time
from datetime import UTC, datetime
from email.header import decode_header, make_header

from daemon.mailer import Letter, Mailer, one_line
from settings import SmtpSettings
from tests.fixtures.smtp import *  # noqa: F403

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
HOSTILE = "Ann\r\nBcc: evil@attacker.example"


def smtp_for(server, **overrides) -> SmtpSettings:
    return SmtpSettings(
        **{
            "host": server.host,
            "port": server.port,
            "security": "none",
            "from_address": "Threadline <alerts@team.example>",
            "timeout_seconds": 5,
            **overrides,
        }
    )


def letter(to: str, name: str = "Ann Owner", subject: str = "Threadline: 1 stalled deal") -> Letter:
    return Letter(
        to_address=to, to_name=name, subject=subject, text=f"Hello {one_line(name)}", html="<p>Hi</p>"
    )


def decoded(raw: bytes, name: str) -> str:
    """A header as RFC 2047 decodes it (the stdlib's structured parser adds spaces between encoded words)."""
    value = email.message_from_bytes(raw)[name]  # the compat32 policy: the raw value, unfolded
    return str(make_header(decode_header(value)))


def header_lines(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return head.split("\r\n")


def test_line_breaks_in_names_and_subjects_never_make_a_header(smtp_server):
    with Mailer(smtp_for(smtp_server)) as mailer:
        delivery = mailer.send(
            letter("ann@team.example", name=HOSTILE, subject="Re: pricing\r\nBcc: evil@attacker.example"),
            now=NOW,
        )
    assert delivery.ok, delivery.error
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("ann@team.example",)
    assert mail.message["Bcc"] is None
    assert str(mail.message["To"]) == '"Ann Bcc: evil@attacker.example" <ann@team.example>'
    assert mail.message["Subject"] == "Re: pricing Bcc: evil@attacker.example"
    assert mail.message["From"] == "Threadline <alerts@team.example>"
    assert mail.message["Auto-Submitted"] == "auto-generated"
    assert not any(line.lower().startswith("bcc:") for line in header_lines(mail.raw))


def test_long_and_non_ascii_names_are_encoded_and_folded(smtp_server):
    name = "Zoë Ünal-Ñúñez, Head of Ops (EMEA) " * 4
    subject = "Threadline: " + "Überfällige Aufgabe für Zoë, " * 6
    with Mailer(smtp_for(smtp_server)) as mailer:
        assert mailer.send(letter("zoe@team.example", name=name, subject=subject), now=NOW).ok
    [mail] = smtp_server.wait_for(1)
    lines = header_lines(mail.raw)
    assert max(len(line) for line in lines) <= 78
    assert any(line.startswith(" ") for line in lines)  # folded
    assert decoded(mail.raw, "To") == f"{one_line(name)} <zoe@team.example>"
    assert decoded(mail.raw, "Subject") == one_line(subject)


def test_each_letter_is_its_own_attempt(smtp_server):
    smtp_server.refused.add("gone@team.example")
    letters = [
        letter("ann@team.example"),
        letter("gone@team.example"),  # refused by the server at RCPT TO
        letter("bob@"),  # not an address
        letter("carl@team.example", name="Carl \ud800"),  # a name no charset can encode
        letter("dana@exämple.com"),  # an international domain goes out in its IDNA form
        letter("eve@team.example"),
    ]
    with Mailer(smtp_for(smtp_server)) as mailer:
        deliveries = [mailer.send(one, now=NOW) for one in letters]

    errors = [d.error for d in deliveries]
    assert errors[0] is None and errors[4] is None and errors[5] is None
    assert f"SMTP 127.0.0.1:{smtp_server.port} refused the message to gone@team.example" in errors[1]
    assert "550 5.1.1 No such user here" in errors[1]
    assert errors[2] == "not sent: 'bob@' is not an email address"
    assert errors[3] == "not sent: the message to 'carl@team.example' cannot be encoded"
    received = smtp_server.wait_for(3)
    assert [m.rcpt_tos for m in received] == [
        ("ann@team.example",),
        ("dana@xn--exmple-cua.com",),
        ("eve@team.example",),
    ]


def test_a_broken_connection_fails_one_letter_and_the_next_reconnects(smtp_server):
    with Mailer(smtp_for(smtp_server)) as mailer:
        assert mailer.send(letter("ann@team.example"), now=NOW).ok
        smtp_server.stop()  # drops the open connection
        smtp_server.start()
        broken = mailer.send(letter("bob@team.example"), now=NOW)
        after = mailer.send(letter("carl@team.example"), now=NOW)
    assert broken.error is not None and broken.error.startswith(f"SMTP 127.0.0.1:{smtp_server.port}: ")
    assert after.ok, after.error
    assert [m.rcpt_tos for m in smtp_server.wait_for(2)] == [("ann@team.example",), ("carl@team.example",)]


def test_an_unreachable_server_fails_the_letters_left_at_once(smtp_server):
    smtp_server.stop()
    started = time.monotonic()
    with Mailer(smtp_for(smtp_server)) as mailer:
        deliveries = [mailer.send(letter(f"owner{i}@team.example"), now=NOW) for i in range(20)]
    assert time.monotonic() - started < 5  # one connection attempt, not one per letter
    [error] = {d.error for d in deliveries}
    assert error is not None and error.startswith(f"SMTP 127.0.0.1:{smtp_server.port}: ")
    assert "refused" in error.lower()


def test_a_bad_from_address_is_named_and_nothing_is_sent(smtp_server):
    with Mailer(smtp_for(smtp_server, from_address="alerts at team")) as mailer:
        delivery = mailer.send(letter("ann@team.example"), now=NOW)
    assert delivery.error == "not sent: [smtp] from_address 'alerts at team' is not an email address"
    assert smtp_server.messages == []
