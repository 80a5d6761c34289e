"""What the sync gets out of raw messages: readable headers and bodies, stable keys, safe HTML, snippets."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest

from daemon.matching import automated_reason
from daemon.parsing import mime_tree
from daemon.parsing.body import PART_FIELD_MAX_BYTES, ParseError, cap_part_fields
from daemon.parsing.content_key import content_key
from daemon.parsing.headers import parse_headers
from daemon.parsing.html import sanitize_html
from daemon.parsing.message import parse_message
from daemon.parsing.snippet import make_snippet
from models.messages import Address, Email
from settings import MatchingSettings

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def message_bytes(
    body: str = "Hello Ann,\n\nthe quote is attached.\n",
    *,
    subject: str = "Quote for Acme",
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    message = EmailMessage()
    message["From"] = "Bob Seller <bob@vendor.example>"
    message["To"] = "Ann Buyer <ann@acme.example>"
    message["Subject"] = subject
    message["Date"] = "Tue, 05 Mar 2024 10:15:00 +0100"
    message["Message-ID"] = "<quote-1@vendor.example>"
    for name, value in (extra_headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()


def corpus_files() -> list[Path]:
    def is_message(path: Path) -> bool:
        name = path.name.upper()
        return path.is_file() and not name.startswith("README") and "LICENSE" not in name

    return sorted(path for path in CORPUS.rglob("*") if is_message(path))


# --- headers -------------------------------------------------------------------------------------------


def test_rfc2047_subject_and_names_are_decoded() -> None:
    raw = (
        b"From: =?utf-8?q?Doe,_J=C3=BCrgen?= <Juergen.Doe@Example.COM>\r\n"
        b"To: =?iso-8859-1?Q?Fran=E7ois?= <francois@acme.example>\r\n"
        # A UTF-8 character split across two encoded words, as some mailers do.
        b"Subject: =?utf-8?B?UmU6IEFuZ2Vib3Qg8J+Tjg==?= =?utf-8?Q?_f=C3=BCr_?=\r\n"
        b" =?utf-8?B?5pel5pys?= =?utf-8?B?6Kqe?=\r\n"
        b"Message-ID: <a1@example.com>\r\n"
        b"\r\n"
        b"body\r\n"
    )

    headers = parse_headers(raw)

    assert headers.subject == "Re: Angebot \U0001f4ce für 日本語"
    assert headers.from_ == (Address(name="Doe, Jürgen", email="juergen.doe@example.com"),)
    assert headers.from_[0].domain == "example.com"
    assert headers.to == (Address(name="François", email="francois@acme.example"),)


def test_8bit_headers_are_readable() -> None:
    utf8 = "From: Jöhn Dœ <john@example.com>\r\nSubject: Grüße aus Köln\r\n\r\nbody\r\n".encode()
    latin1 = "From: José Núñez <jose@example.com>\r\nSubject: Señal\r\n\r\nbody\r\n".encode("latin-1")

    assert parse_headers(utf8).subject == "Grüße aus Köln"
    assert parse_headers(utf8).from_[0].name == "Jöhn Dœ"
    assert parse_headers(latin1).subject == "Señal"
    assert parse_headers(latin1).from_[0].name == "José Núñez"


def test_group_syntax_recipients_do_not_crash_and_members_are_kept() -> None:
    raw = (
        b"From: bob@vendor.example\r\n"
        b"To: unlisted-recipients:; (no To-header on input)\r\n"
        b"Cc: Buyers: Ann <ann@acme.example>, carl@acme.example;, dora@acme.example\r\n"
        b"Bcc: undisclosed-recipients:;\r\n"
        b"Subject: groups\r\n\r\nbody\r\n"
    )

    headers = parse_headers(raw)
    parsed = parse_message(raw)

    assert headers.to == ()
    assert headers.bcc == ()
    assert [address.email for address in headers.cc] == [
        "ann@acme.example",
        "carl@acme.example",
        "dora@acme.example",
    ]
    assert parsed.headers == headers


def test_message_id_date_and_thread_headers() -> None:
    raw = (
        b"From: bob@vendor.example\r\n"
        b"Message-ID:   <Mixed.Case-1@Vendor.example>  \r\n"
        b"In-Reply-To: <parent@acme.example> (Ann's message of Monday)\r\n"
        b"References: <root@acme.example>\r\n <parent@acme.example>\r\n"
        b"Date: Tue, 05 Mar 2024 10:15:00 +0100\r\n"
        b"\r\nbody\r\n"
    )

    headers = parse_headers(raw)

    assert headers.message_id == "<Mixed.Case-1@Vendor.example>"
    assert headers.in_reply_to == ("<parent@acme.example>",)
    assert headers.references == ("<root@acme.example>", "<parent@acme.example>")
    assert headers.date == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    assert content_key(headers) == "mid:<Mixed.Case-1@Vendor.example>"


def test_missing_or_garbage_header_values_give_empty_fields() -> None:
    headers = parse_headers(b"From: nobody\r\nDate: yesterday-ish\r\nMessage-ID: \r\nTo: <>\r\n\r\nbody\r\n")

    assert headers.from_ == ()
    assert headers.to == ()
    assert headers.date is None
    assert headers.message_id is None
    assert headers.subject == ""


@pytest.mark.parametrize(
    ("extra_headers", "sender", "reason"),
    [
        ({"List-Id": "Sales <sales.lists.example>"}, "bob@vendor.example", "List-Id header"),
        ({"List-Unsubscribe": "<mailto:out@lists.example>"}, "bob@vendor.example", "List-Unsubscribe header"),
        ({"Precedence": "bulk"}, "bob@vendor.example", "Precedence: bulk"),
        ({"Precedence": "list"}, "bob@vendor.example", "Precedence: list"),
        ({"Precedence": "junk"}, "bob@vendor.example", "Precedence: junk"),
        ({"Auto-Submitted": "auto-replied"}, "bob@vendor.example", "Auto-Submitted: auto-replied"),
        ({}, "no-reply@vendor.example", "From address no-reply@vendor.example"),
        ({}, "noreply@vendor.example", "From address noreply@vendor.example"),
        ({}, "do-not-reply@vendor.example", "From address do-not-reply@vendor.example"),
        ({}, "donotreply@vendor.example", "From address donotreply@vendor.example"),
        ({}, "MAILER-DAEMON@vendor.example", "From address mailer-daemon@vendor.example"),
        ({}, "postmaster@vendor.example", "From address postmaster@vendor.example"),
        ({}, "bounces+ann=acme.example@lists.example", "From address bounces+ann=acme.example@lists.example"),
        ({"Sender": "bounce@lists.example"}, "bob@vendor.example", "Sender address bounce@lists.example"),
    ],
)
def test_automated_mail_is_recognised(extra_headers: dict[str, str], sender: str, reason: str) -> None:
    raw = message_bytes(extra_headers=extra_headers).replace(b"bob@vendor.example", sender.encode())

    assert automated_reason(parse_headers(raw)) == reason


def test_person_to_person_mail_is_not_automated() -> None:
    raw = message_bytes(extra_headers={"Auto-Submitted": "no", "Precedence": "first-class"})

    assert automated_reason(parse_headers(raw)) is None


# --- bodies and charsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("iso-2022-jp", "お世話になっております。見積書をお送りします。"),
        ("koi8-r", "Добрый день! Высылаю коммерческое предложение."),
        ("shift_jis", "見積書を添付いたします。"),
        ("euc-kr", "견적서를 보내드립니다."),
        ("big5", "附上報價單。"),
        ("windows-1251", "Здравствуйте, высылаю счёт."),
    ],
)
def test_non_utf8_bodies_are_readable(charset: str, text: str) -> None:
    message = MIMEText(text, "plain", charset)
    message["From"] = "sender@example.jp"
    message["Subject"] = "見積"

    parsed = parse_message(message.as_bytes())

    assert parsed.body.text == text
    assert parsed.body.snippet == text


def test_8bit_koi8r_body_is_readable() -> None:
    text = "Привет, это проверка восьмибитного письма."
    message = EmailMessage()
    message["From"] = "ivan@example.ru"
    message.set_content(text, charset="koi8-r", cte="8bit")
    raw = message.as_bytes()
    assert text.encode("koi8-r") in raw

    assert parse_message(raw).body.text == text


def test_html_only_message_gets_sanitized_html_and_derived_text() -> None:
    message = EmailMessage()
    message["From"] = "ann@acme.example"
    message.set_content(
        "<html><head><style>p {color: red}</style><title>ignored</title></head><body>"
        "<p>Thanks Bob,<br>we accept the <b>quote</b>.</p><script>steal()</script>"
        "<div>On Mon, Bob wrote:</div><blockquote><p>Here is the quote</p></blockquote></body></html>",
        subtype="html",
    )

    parsed = parse_message(message.as_bytes())

    assert parsed.body.html is not None
    assert "<b>quote</b>" in parsed.body.html
    assert "steal" not in parsed.body.html
    assert "color: red" not in parsed.body.html
    assert parsed.body.text.splitlines()[:2] == ["Thanks Bob,", "we accept the quote."]
    assert "> Here is the quote" in parsed.body.text
    assert parsed.body.snippet == "Thanks Bob, we accept the quote."


def test_alternative_message_keeps_plain_text_and_html() -> None:
    message = EmailMessage()
    message["From"] = "ann@acme.example"
    message.set_content("Plain version\n")
    message.add_alternative("<p>HTML <i>version</i></p>", subtype="html")

    parsed = parse_message(message.as_bytes())

    assert parsed.body.text == "Plain version"
    assert parsed.body.html == "<p>HTML <i>version</i></p>"
    assert parsed.body.attachments == ()


# --- attachments -----------------------------------------------------------------------------------------


def message_with_attachments() -> bytes:
    message = MIMEMultipart()
    message["From"] = "bob@vendor.example"
    message["To"] = "ann@acme.example"
    message["Subject"] = "Files"
    message.attach(MIMEText("See the files.\n", "plain", "utf-8"))
    small = MIMEApplication(b"%PDF-1.4 small", "pdf")
    small.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "Angebot Müller.pdf"))
    message.attach(small)
    large = MIMEApplication(bytes(range(256)) * 40, "octet-stream")
    large.add_header("Content-Disposition", "attachment", filename="=?utf-8?q?Gr=C3=B6=C3=9Fe.bin?=")
    message.attach(large)
    return message.as_bytes()


def test_attachments_metadata_and_size_cutoff() -> None:
    parsed = parse_message(message_with_attachments(), MatchingSettings(max_attachment_bytes=5000))

    small, large = parsed.body.attachments
    assert (small.filename, small.content_type, small.size, small.content) == (
        "Angebot Müller.pdf",
        "application/pdf",
        14,
        b"%PDF-1.4 small",
    )
    assert (large.filename, large.content_type, large.size, large.content) == (
        "Größe.bin",
        "application/octet-stream",
        10240,
        None,
    )
    assert parsed.body.text == "See the files."


def test_unnamed_attachment_gets_the_same_name_on_every_parse() -> None:
    message = MIMEMultipart()
    message["From"] = "bob@vendor.example"
    message.attach(MIMEText("body\n"))
    unnamed = MIMEApplication(b"data", "octet-stream")
    unnamed.add_header("Content-Disposition", "attachment")
    message.attach(unnamed)
    raw = message.as_bytes()

    names = {parse_message(raw).body.attachments[0].filename for _ in range(3)}

    assert names == {"attachment-1.bin"}


def test_message_over_size_limit_keeps_headers_only() -> None:
    raw = message_with_attachments()

    parsed = parse_message(raw, MatchingSettings(max_message_bytes=len(raw) - 1))

    assert parsed.body.truncated
    assert parsed.headers.subject == "Files"
    assert (parsed.body.text, parsed.body.html, parsed.body.snippet, parsed.body.attachments) == (
        "",
        None,
        "",
        (),
    )
    assert parsed.content_key == content_key(parse_headers(raw))


# --- content key -----------------------------------------------------------------------------------------


def delivered_copy(message: bytes, inbox: str, line_ending: bytes) -> bytes:
    delivery = (
        f"Return-Path: <bounce-{inbox}@vendor.example>\n"
        f"Delivered-To: {inbox}@acme.example\n"
        f"Received: from mx.vendor.example by mx-{inbox}.acme.example;\n"
        f"\tTue, 5 Mar 2024 10:15:0{len(inbox)} +0000\n"
        f"X-Spam-Score: {len(inbox)}\n"
    ).encode()
    return (delivery + message).replace(b"\r\n", b"\n").replace(b"\n", line_ending)


def test_same_key_for_two_deliveries_of_a_message_without_message_id() -> None:
    original = message_bytes("Hello Ann,  \n\nthe quote is attached.\n").replace(
        b"Message-ID: <quote-1@vendor.example>\n", b""
    )
    first = parse_message(delivered_copy(original, "ann", b"\r\n"))
    second = parse_message(delivered_copy(original, "sales", b"\n"))

    assert first.headers.message_id is None
    assert first.content_key.startswith("sha256:")
    assert first.content_key == second.content_key


def test_different_body_gives_different_key() -> None:
    def key(body: str) -> str:
        raw = message_bytes(body).replace(b"Message-ID: <quote-1@vendor.example>\n", b"")
        return parse_message(raw).content_key

    assert key("Price is 100 EUR\n") != key("Price is 200 EUR\n")


def test_message_id_key_needs_no_body_and_survives_absurd_length() -> None:
    raw = message_bytes()
    expected = "mid:<quote-1@vendor.example>"
    assert parse_message(raw).content_key == content_key(parse_headers(raw)) == expected

    long_id = "<" + "x" * 2000 + "@example.com>"
    headers = parse_headers(f"Message-ID: {long_id}\r\n\r\n".encode())
    key = content_key(headers)
    assert key.startswith("mid:sha256:")
    assert len(key) <= 1000


# --- HTML and snippets -----------------------------------------------------------------------------------


def test_sanitize_html_removes_active_content_and_remote_loads() -> None:
    dirty = (
        '<div style="position:fixed;top:0">Hi <b onclick="steal()">there</b>'
        "<script>alert(1)</script>"
        '<img src="https://tracker.example/pixel.gif" alt="logo" onerror="alert(2)">'
        '<img src="cid:logo@vendor.example" alt="inline">'
        '<a href="javascript:alert(3)">bad link</a>'
        '<a href="https://vendor.example/quote">good link</a>'
        '<form action="https://evil.example"><input name="password"></form>'
        '<iframe src="https://evil.example"></iframe></div>'
    )

    clean = sanitize_html(dirty)

    assert "<script" not in clean and "alert(1)" not in clean
    assert "onerror" not in clean and "onclick" not in clean
    assert "javascript:" not in clean
    assert "<form" not in clean and "<input" not in clean and "<iframe" not in clean
    assert "style=" not in clean
    assert "tracker.example" not in clean
    assert '<img alt="logo">' in clean
    assert '<img src="cid:logo@vendor.example" alt="inline">' in clean
    assert '<a href="https://vendor.example/quote" rel="noopener noreferrer nofollow">good link</a>' in clean
    assert "Hi <b>there</b>" in clean


def test_snippet_strips_quoted_reply_and_signature() -> None:
    text = (
        "Hi Bob,\n"
        "> earlier quoted line\n"
        "sounds good, let's sign on Friday.\n"
        "\n"
        "-- \n"
        "Ann Buyer | Acme\n"
        "On Mon, 4 Mar 2024 at 09:00, Bob Seller <bob@vendor.example> wrote:\n"
        "> Here is the quote\n"
    )

    assert make_snippet(text) == "Hi Bob, sounds good, let's sign on Friday."


@pytest.mark.parametrize(
    "history",
    [
        "On Mon, Mar 4, 2024 at 9:00 AM Bob Seller <\nbob@vendor.example> wrote:\n> quote\n",
        "-----Original Message-----\nFrom: Bob\nSent: Monday\nquote\n",
        "________________________________\nFrom: Bob Seller <bob@vendor.example>\nSent: Monday\nquote\n",
        "From: Bob Seller Sent: Monday, March 4 To: Ann\nquote\n",
        "Le lun. 4 mars 2024 à 09:00, Bob Seller <bob@vendor.example> a écrit :\n> quote\n",
    ],
)
def test_snippet_stops_at_reply_history(history: str) -> None:
    assert make_snippet("Agreed, thanks.\n\n" + history) == "Agreed, thanks."


def test_snippet_is_cut_on_a_word_boundary() -> None:
    snippet = make_snippet("word " * 100)

    assert len(snippet) <= 200
    assert snippet.endswith("word\u2026")
    assert make_snippet("  short \n\n text ") == "short text"


# --- failure modes ---------------------------------------------------------------------------------------


def test_mail_parser_failure_falls_back_to_the_email_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(message: object) -> None:
        raise ValueError("mail-parser cannot cope")

    monkeypatch.setattr("daemon.parsing.body.mailparser.MailParser", broken)

    parsed = parse_message(message_with_attachments())

    assert parsed.body.text == "See the files."
    assert [attachment.filename for attachment in parsed.body.attachments] == [
        "Angebot Müller.pdf",
        "Größe.bin",
    ]


def test_unreadable_input_raises_parse_error_with_a_reason() -> None:
    with pytest.raises(ParseError, match="empty"):
        parse_message(b"\r\n")
    with pytest.raises(ParseError, match="no header fields"):
        parse_message(b"just some text, no headers at all\n")


def nested(levels: int, text: bytes) -> bytes:
    """A text part inside `levels` multipart/mixed containers (a body, without the top header fields)."""
    body = b"Content-Type: text/plain\r\n\r\n" + text + b"\r\n"
    for depth in range(levels):
        body = (
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (depth, depth)
            + body
            + b"\r\n--b%d--\r\n" % depth
        )
    return body


def test_mime_nested_too_deep_raises_parse_error() -> None:
    body = nested(1200, b"hello")

    with pytest.raises(ParseError, match="MIME structure"):
        parse_message(b"From: a@example.com\r\nSubject: deep\r\n" + body)


def test_every_corpus_message_is_parsed_or_refused_with_a_reason() -> None:
    files = corpus_files()
    assert len(files) > 100, f"corpus not found or incomplete at {CORPUS}"

    parsed = 0
    for path in files:
        raw = path.read_bytes()
        headers = parse_headers(raw)
        assert isinstance(headers.subject, str), path
        try:
            result = parse_message(raw)
        except ParseError as error:
            assert str(error), path
        else:
            assert isinstance(result, Email), path
            assert result.headers == headers, path
            assert "\x00" not in result.body.text, path
            parsed += 1
    # Only input without a single header field is refused (the corpus has a digest body saved on its own).
    assert parsed >= len(files) - 3


# --- caps ------------------------------------------------------------------------------------------------


def test_a_header_block_over_the_cap_is_cut_after_a_whole_line() -> None:
    recipients = ",\r\n ".join(f"person{i}@company{i}.example" for i in range(5000))
    raw = f"From: a@b.example\r\nSubject: many\r\nTo: {recipients}\r\n\r\nbody\r\n".encode()

    headers = parse_headers(raw, max_header_bytes=4096)

    assert headers.truncated and headers.subject == "many"
    assert 100 < len(headers.to) < 200
    assert all(a.email.endswith(".example") for a in headers.to)  # no address read half-written
    assert not parse_headers(message_bytes()).truncated


def test_mime_parts_past_the_caps_are_left_out_and_the_body_marked_truncated() -> None:
    message = MIMEMultipart()
    message["From"] = "bob@vendor.example"
    message.attach(MIMEText("See the files.\n"))
    for index in range(30):
        part = MIMEApplication(b"data", "octet-stream")
        part.add_header("Content-Disposition", "attachment", filename=f"file{index}.bin")
        message.attach(part)

    capped = parse_message(message.as_bytes(), MatchingSettings(max_mime_parts=10))
    full = parse_message(message.as_bytes())

    assert capped.body.truncated and capped.body.text == "See the files."
    assert [a.filename for a in capped.body.attachments] == [f"file{i}.bin" for i in range(8)]
    assert not full.body.truncated and len(full.body.attachments) == 30


def test_mime_nested_past_the_depth_cap_is_left_out() -> None:
    body = nested(10, b"deep down")
    raw = b"From: a@example.com\r\nSubject: nested\r\n" + body

    assert parse_message(raw).body.text == "deep down"
    shallow = parse_message(raw, MatchingSettings(max_mime_depth=5))
    assert shallow.body.truncated and shallow.body.text == ""


def test_content_fields_of_parts_are_capped_before_any_parser_reads_them() -> None:
    field = b"Content-Type: text/plain; charset=utf-8" + b";" * 60_000 + b"; format=flowed"
    capped = cap_part_fields(b"--b\r\n" + field + b"\r\n\r\ntext\r\n")
    assert capped == b"--b\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\r\ntext\r\n"
    long_value = b"Content-Disposition: attachment; filename*0=" + b"x" * 10_000 + b"\r\n\r\n"
    assert len(cap_part_fields(long_value).split(b"\r\n")[0]) <= PART_FIELD_MAX_BYTES


# --- the MIME tree ------------------------------------------------------------------------------------


def _tree(message: Message) -> object:
    """Everything of a stdlib Message that parsing can set, nested."""
    payload = message.get_payload()
    return (
        message._headers,  # the raw fields, in order, as the parser stored them
        message.get_unixfrom(),
        message.preamble,
        message.epilogue,
        [type(defect).__name__ for defect in message.defects],
        [_tree(part) for part in payload] if isinstance(payload, list) else payload,
    )


def _multipart(eol: str, *, preamble: str = "", epilogue: str = "", close: bool = True) -> bytes:
    inner = eol.join(
        [
            "--in  ", "Content-Type: text/plain; charset=utf-8", "", "Hello Ann,", "", "the quote.",
            "--in", "Content-Type: text/html", "Content-Transfer-Encoding: quoted-printable", "",
            "<p>Hello</p>", "--in--", "",
        ]
    )  # fmt: skip
    lines = [
        "Content-Type: multipart/mixed;", ' boundary="out"', "MIME-Version: 1.0", "", preamble + "--out",
        'Content-Type: multipart/alternative; boundary="in"', "", inner, "--out",
        'Content-Type: application/pdf; name="quote.pdf"', "Content-Transfer-Encoding: base64", "",
        "JVBERi0xLjQK", "--out--" if close else "--outer-not-a-boundary", epilogue,
    ]  # fmt: skip
    return eol.join(lines).encode()


def test_the_fast_mime_tree_is_the_stdlib_parsers_tree_on_every_corpus_message() -> None:
    files = corpus_files()
    assert len(files) > 100, f"corpus not found or incomplete at {CORPUS}"
    for path in files:
        raw = path.read_bytes()
        try:
            expected = _tree(email.message_from_bytes(raw))
        except RecursionError:
            continue
        assert _tree(mime_tree.mime_tree(raw)) == expected, path.name


def test_the_fast_mime_tree_reads_well_formed_mail_itself_and_the_rest_as_the_stdlib_does() -> None:
    well_formed = [
        _multipart("\r\n"),
        _multipart("\n"),
        _multipart("\r\n", preamble="This is a multi-part message.\r\n\r\n", epilogue="\r\nbye\r\n"),
        message_bytes(),
    ]
    unusual = [
        _multipart("\r\n", close=False),  # no close delimiter
        _multipart("\r"),  # lone CR line breaks
        _multipart("\r\n").replace(
            b"--out\r\nContent-Type: application", b"--out\r\n--out\r\nContent-Type: app"
        ),
        _multipart("\r\n").replace(b"Content-Type: text/html", b"Content-Type: message/rfc822"),
        _multipart("\r\n").replace(b"Content-Type: text/html", b"not a field\r\nContent-Type: text/html"),
        b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nno boundary parameter\r\n--x--\r\n",
    ]
    for raw in well_formed:
        text = raw.decode("ascii", "surrogateescape")
        assert _tree(mime_tree._part(text, 0)) == _tree(email.message_from_bytes(raw))
    for raw in unusual:
        text = raw.decode("ascii", "surrogateescape")
        if text.count("\r") == text.count("\r\n"):
            with pytest.raises(mime_tree._Unusual):
                mime_tree._part(text, 0)
        assert _tree(mime_tree.mime_tree(raw)) == _tree(email.message_from_bytes(raw))
