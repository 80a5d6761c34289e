"""Raw RFC 5322 bytes in, frozen dataclasses out: the one module that imports mail-parser.

It owns everything about reading a message the sync fetched: the cheap header pass every message gets
(`parse_headers`), the full parse of the few messages that are logged (`parse_message`), the content key
that makes logging idempotent across inboxes, HTML sanitizing, snippets and the free-mail domain list.
Nothing here touches the network, the database or settings; limits arrive as arguments.

Decisions worth knowing before changing anything:

- `parse_headers` reads only the header block with the stdlib parser (compat32) and decodes everything
  itself: 8-bit header bytes are tried as UTF-8 (RFC 6532), then the charset the body declares, then
  Windows-1252/Latin-1; RFC 2047 words are decoded leniently (bad base64, unknown charsets, words split in
  the middle of a multi-byte character). It never raises: a field that cannot be read comes back empty.
- Header blocks are mended before parsing: a junk line between fields is joined to the field above and the
  obsolete "Name : value" form is accepted, where Python's parser would end the headers (and lose From,
  To, Subject below). Both functions read the same mended block, so their headers always agree.
- `parse_message` takes bodies and attachments from mail-parser and falls back to walking the stdlib
  `email` tree if mail-parser raises. Two mail-parser habits are corrected here: 7bit ISO-2022 bodies
  (iso-2022-jp mail) come back undecoded, and parts without a filename get a random name, which would make
  two parses of one message disagree; such parts are named `attachment-<n><ext>` or after their Content-ID.
  mail-parser is handed only the Content-* and MIME-Version fields and the body: headers are ours, and
  parsing them again was most of its cost. `ParseError` is raised only for input that is not a message
  at all (empty, no header field) or that neither parser can walk (for instance MIME nested too deep).
- The content key is `mid:<message-id>` when there is a Message-ID, else `sha256:` over the fields every
  delivery of the message shares: the Date (as parsed, UTC), From/To/Cc addresses, the subject and the
  body text with line endings and trailing blanks normalized. Received, Delivered-To, Return-Path and
  other per-inbox headers never enter it. Keys stay within 1000 characters (the column size): an
  absurdly long Message-ID is hashed into `mid:sha256:<hex>`.
- `sanitize_html` keeps formatting only. Remote images are not loaded by the CRM page (they are tracking
  pixels as often as not): every <img> loses its src unless it is `cid:` (an attachment of the message)
  or an inline `data:image/` raster; the alt text stays. Links keep http, https and mailto hrefs only and
  get rel="noopener noreferrer nofollow".
"""

from __future__ import annotations

import base64
import binascii
import codecs
import fnmatch
import functools
import hashlib
import inspect
import json
import logging
import mimetypes
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import mailparser
import nh3

log = logging.getLogger(__name__)

# mail-parser logs a WARNING for every MIME oddity a sender produces ("content 'alternative' not
# handled"); that is noise about other people's mail, not about our health. Levels alone do not hold
# because the process-wide logging setup raises them back to WARNING, so stop the records at its root.
_MAILPARSER_LOG = logging.getLogger("mailparser")
_MAILPARSER_LOG.propagate = False
if not any(isinstance(handler, logging.NullHandler) for handler in _MAILPARSER_LOG.handlers):
    _MAILPARSER_LOG.addHandler(logging.NullHandler())

DEFAULT_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024
CONTENT_KEY_MAX_LENGTH = 1000
SNIPPET_LIMIT = 200
FREEMAIL_FILE = Path(__file__).with_name("freemail.txt")

# A header block larger than this is hostile or broken; reading further would only cost time.
_MAX_HEADER_BYTES = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Address:
    """One mailbox from an address header."""

    name: str
    email: str

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class MessageHeaders:
    """What the header block says; cheap enough to compute for every message in an inbox."""

    message_id: str | None
    subject: str
    date: datetime | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    is_automated: bool
    automated_reason: str | None


@dataclass(frozen=True)
class Attachment:
    """A file carried by the message; `content` is None when it exceeds the size limit."""

    filename: str
    content_type: str
    size: int
    content: bytes | None


@dataclass(frozen=True)
class ParsedMessage:
    """A message ready to be logged: headers, readable bodies, snippet and attachments."""

    headers: MessageHeaders
    content_key: str
    text: str
    html: str | None
    snippet: str
    attachments: tuple[Attachment, ...]
    truncated: bool
    size: int


class ParseError(Exception):
    """The input cannot be read as a message at all; the text says why, for the quarantine record."""


# ---------------------------------------------------------------------------------------------------------
# Bytes and charsets


# Labels that senders use for a superset of what the label strictly names; decoding with the superset
# turns characters such as Windows' extra Japanese symbols into text instead of replacement marks.
_CHARSET_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "big5": "big5hkscs",
    "iso-8859-8-i": "iso8859-8",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "unicode-1-1-utf-7": "utf-7",
}
_ASCII_LIKE = frozenset({"ascii", "utf-8"})
_ISO2022_CODECS = ("iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3", "iso2022_kr")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


@functools.lru_cache(maxsize=256)
def _codec_name(charset: str | None) -> str | None:
    """The Python codec for a sender's charset label, or None when there is no usable text codec."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").split("*", 1)[0].strip().lower()
    label = _CHARSET_SUPERSETS.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # lookup() also answers for bytes-to-bytes codecs such as base64 or zlib, which are not charsets.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _decode_bytes(data: bytes, *charsets: str | None) -> str:
    """Readable text from sender bytes: declared charsets strictly, then UTF-8, then a lossy decode."""
    tried: list[str] = []
    for charset in (*charsets, "utf-8"):
        codec = _codec_name(charset)
        if codec is None or codec in tried:
            continue
        tried.append(codec)
        text = _try_decode(data, codec, "strict")
        if text is not None:
            return text
    lossy = next((codec for codec in tried if codec not in _ASCII_LIKE), None)
    text = _try_decode(data, lossy, "replace") if lossy else None
    if text is None:
        text = _try_decode(data, "cp1252", "strict")
    return text if text is not None else data.decode("latin-1")


def _try_decode(data: bytes, codec: str, errors: str) -> str | None:
    try:
        return data.decode(codec, errors)
    # Codecs picked by a sender's label fail in assorted ways: UnicodeError, or TypeError/ValueError from
    # codecs such as idna that refuse an error handler.
    except Exception:
        return None


def _repair_iso2022(text: str) -> str:
    """Decode ISO-2022 escape sequences left in text that reached us as undecoded 7-bit ASCII."""
    if "\x1b" not in text or not text.isascii():
        return text
    data = text.encode("ascii")
    for codec in _ISO2022_CODECS:
        try:
            decoded = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if "\x1b" not in decoded:
            return decoded
    return text


def _scrub(text: str) -> str:
    """Drop what a database cannot store: NUL characters and lone surrogates some codecs produce."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text


def _b64decode_lenient(data: bytes) -> bytes:
    """Decode base64 the way mail clients do: ignore stray characters, repair missing padding."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/=]", b"", data).split(b"=", 1)[0]
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def _encode_text(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------------------
# Header fields

_HEADER_END_RE = re.compile(rb"\n\r?\n")
_FIELD_LINE_RE = re.compile(rb"[!-9;-~]+:")
_OBSOLETE_FIELD_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
# A line that is neither a field, a continuation, an mbox separator nor the blank end of the block.
# Anchored on the newline itself so the scan jumps from line to line instead of testing every byte.
_SUSPECT_HEADER_LINE_RE = re.compile(rb"\n(?![!-9;-~]+:|[ \t]|From |\r?\n|\r?$)")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ENCODED_WORD = r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?="
_ENCODED_WORD_RE = re.compile(_ENCODED_WORD)
_ENCODED_RUN_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?]*\?=(?:\s*=\?[^?\s]+\?[bBqQ]\?[^?]*\?=)*")
_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")
_CHARSET_PARAM_RE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:+-]+)", re.IGNORECASE)
_MESSAGE_ID_RE = re.compile(r"<([^<>]*)>")
_SIMPLE_MAILBOX_RE = re.compile(
    r"""\s*(?:
        (?:"((?:[^"\\]|\\.)*)"|([^",<>()\[\]:;@\\]*?))\s*<([^<>\s@",()\[\]:;\\]+@[^<>\s@",()\[\]:;\\]+)>
        |([^<>\s@",()\[\]:;\\]+@[^<>\s@",()\[\]:;\\]+)
    )\s*(?:,\s*|$)""",
    re.VERBOSE,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_LOOSE_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_AUTOMATED_LOCAL_PARTS = frozenset(
    {"noreply", "donotreply", "mailerdaemon", "postmaster", "bounce", "bounces"}
)
_AUTOMATED_LOCAL_PREFIX_RE = re.compile(r"(?:no-?reply|do-?not-?reply|bounces?)(?:[-_.]|$)")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})

# Python 3.11.10+ getaddresses() returns nothing for input it used to read best-effort; ask for the
# old behaviour where it exists, since a recipient we can read beats a recipient we drop.
_GETADDRESSES_KWARGS: dict[str, bool] = (
    {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}
)


def _split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    """The header block (through its blank line) and the rest, with a damaged block mended.

    Python's parser ends the headers at the first line that is not a field, so one junk line in the
    middle (spam tools, broken folding) would turn From, To and Subject below it into body text, and
    the obsolete "Name : value" form is not read at all. A junk line followed by more fields is joined
    to the field above as a continuation; junk after the last field is where a body starts without the
    blank line, and stays as it is.
    """
    end = _HEADER_END_RE.search(raw, 0, _MAX_HEADER_BYTES)
    block = raw[: end.end()] if end else raw[:_MAX_HEADER_BYTES]
    rest = raw[len(block) :]
    if not _SUSPECT_HEADER_LINE_RE.search(b"\n" + block):
        return block, rest
    lines = _OBSOLETE_FIELD_NAME_RE.sub(rb"\1:", block).splitlines(keepends=True)
    last_field = max((i for i, line in enumerate(lines) if _FIELD_LINE_RE.match(line)), default=-1)
    for index in range(last_field):
        line = lines[index]
        is_mbox_separator = index == 0 and line.startswith(b"From ")
        if line.strip() and not (is_mbox_separator or _FIELD_LINE_RE.match(line) or line[:1] in b" \t"):
            lines[index] = b" " + line
    return b"".join(lines), rest


def _mime_only(block: bytes) -> bytes:
    """The header block reduced to the fields that shape the MIME tree, for the body parsers.

    Headers are read by parse_headers; handing mail-parser the Received chain, addresses and dates
    would only make it parse them again (most of its cost) and expose it to their defects. The
    mended block is used, so both agree on where the body starts.
    """
    kept: list[bytes] = []
    keep = False
    lines = block.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        if not _FIELD_LINE_RE.match(line):
            if index == 0 and line.startswith(b"From "):
                continue
            # The blank line, or the first body line of a message that has none before its body.
            body_start = lines[index:] if line.strip() else []
            break
        name = line.split(b":", 1)[0].lower()
        keep = name.startswith(b"content-") or name == b"mime-version"
        if keep:
            kept.append(line)
    else:
        body_start = []
    kept.append(b"\r\n" if block.endswith(b"\r\n") else b"\n")
    return b"".join(kept + body_start)


def _read_header_fields(block: bytes) -> dict[str, list[str]]:
    """Header name (lower case) -> raw values in order, from a header block."""
    fields: dict[str, list[str]] = {}
    try:
        message = BytesHeaderParser(policy=compat32).parsebytes(block)
        for name, value in message.raw_items():
            fields.setdefault(str(name).strip().lower(), []).append(str(value))
    except Exception:
        log.debug("header block unreadable", exc_info=True)
    return fields


def _header_text(value: str, charset_hint: str | None) -> str:
    """Unfold a raw header value and turn its 8-bit bytes (carried as surrogates) into text."""
    text = _FOLD_RE.sub("", value)
    if text.isascii():
        return text
    try:
        data = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text
    return _decode_bytes(data, "utf-8", charset_hint)


def _clean_header_text(text: str) -> str:
    """One line of display text: ISO-2022 repaired, controls gone, whitespace collapsed."""
    text = _scrub(_repair_iso2022(text))
    return " ".join(_CONTROL_RE.sub(" ", text).split())


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    if encoding in "bB":
        return _b64decode_lenient(payload.encode("ascii", "ignore"))
    return binascii.a2b_qp(payload.encode("utf-8", "surrogateescape"), header=True)


def _decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words leniently, joining adjacent words before charset decoding."""
    if "=?" not in text:
        return text
    pieces: list[str] = []
    run: list[tuple[str, bytearray]] = []

    def flush() -> None:
        pieces.extend(_decode_bytes(bytes(data), charset) for charset, data in run)
        run.clear()

    position = 0
    for match in _ENCODED_WORD_RE.finditer(text):
        gap = text[position : match.start()]
        # RFC 2047 6.2: whitespace between two encoded words is not part of the text. Joining their
        # bytes also mends senders that split a multi-byte character across two words.
        if not (run and not gap.strip()):
            flush()
            pieces.append(gap)
        charset = match[1].split("*", 1)[0].lower()
        data = _decode_word_payload(match[2], match[3])
        if run and run[-1][0] == charset:
            run[-1][1].extend(data)
        else:
            run.append((charset, bytearray(data)))
        position = match.end()
    flush()
    pieces.append(text[position:])
    return "".join(pieces)


def _charset_hint(fields: dict[str, list[str]]) -> str | None:
    """The charset the top-level Content-Type declares: the best guess for raw 8-bit header bytes."""
    content_type = fields.get("content-type")
    if not content_type:
        return None
    match = _CHARSET_PARAM_RE.search(content_type[0])
    return match[1] if match else None


def _normalize_email(value: str) -> str | None:
    email = "".join(_CONTROL_RE.sub(" ", _scrub(value)).split()).strip("<>\"'").lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return None
    return email


def _split_address_list(text: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs; plain lists are read by regex, anything else by getaddresses.

    The stdlib address parser walks the header one character at a time in Python and dominated the
    cost of parse_headers; nearly every real header is a list of `addr`, `Name <addr>` or
    `"Quoted, Name" <addr>`, which the fast path reads exactly as getaddresses would.
    """
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _SIMPLE_MAILBOX_RE.match(text, position)
        if match is None:
            return getaddresses([text], **_GETADDRESSES_KWARGS)
        quoted, phrase, angle_addr, bare_addr = match.groups()
        if bare_addr is not None:
            pairs.append(("", bare_addr))
        elif quoted is not None:
            pairs.append((_QUOTED_PAIR_RE.sub(r"\1", quoted), angle_addr))
        else:
            pairs.append((" ".join(phrase.split()), angle_addr))
        position = match.end()
    return pairs


class _EncodedWordStash:
    """Swaps RFC 2047 words for placeholders while an address list is split, then puts them back.

    A decoded name may hold the comma or quote that would split one mailbox into two
    ("=?utf-8?q?Doe,_John?="), so words are decoded only after the list is split.
    """

    def __init__(self) -> None:
        self._decoded: list[str] = []

    def hide(self, text: str) -> str:
        return _ENCODED_RUN_RE.sub(self._placeholder, text) if "=?" in text else text

    def restore(self, text: str) -> str:
        return _PLACEHOLDER_RE.sub(self._original, text) if self._decoded else text

    def _placeholder(self, match: re.Match[str]) -> str:
        self._decoded.append(_decode_encoded_words(match[0]))
        return f"\ue000{len(self._decoded) - 1}\ue001"

    def _original(self, match: re.Match[str]) -> str:
        index = int(match[1])
        return self._decoded[index] if index < len(self._decoded) else ""


def _parse_addresses(values: Sequence[str], charset_hint: str | None) -> tuple[Address, ...]:
    """Mailboxes of every occurrence of an address header; groups flattened, entries without '@' dropped."""
    found: list[Address] = []
    seen: set[str] = set()
    for value in values:
        stash = _EncodedWordStash()
        text = stash.hide(_header_text(value, charset_hint))
        before = len(found)
        for name, address in _split_address_list(text):
            email = _normalize_email(stash.restore(address))
            if email is None or email in seen:
                continue
            seen.add(email)
            display = _clean_header_text(stash.restore(name)).strip("\"' ")
            found.append(Address(name="" if display.lower() == email else display, email=email))
        if len(found) == before and "@" in text:
            # Nothing readable as an address list: keep whatever looks like an address.
            for loose in _LOOSE_ADDRESS_RE.findall(stash.restore(text)):
                email = _normalize_email(loose)
                if email is not None and email not in seen:
                    seen.add(email)
                    found.append(Address(name="", email=email))
    return tuple(found)


def _message_ids(text: str) -> list[str]:
    """Message-ids in a header, each with angle brackets, duplicates and comments dropped."""
    ids: list[str] = []
    for match in _MESSAGE_ID_RE.finditer(text):
        inner = "".join(match[1].split())
        if inner:
            ids.append(f"<{inner}>")
    if not ids:
        # Some mailers leave out the brackets.
        ids = [f"<{token.strip('<>,;')}>" for token in text.split() if "@" in token.strip("<>,;")]
    return list(dict.fromkeys(ids))


def _normalize_message_id(value: str | None) -> str | None:
    if value is None:
        return None
    compact = "".join(value.split())
    if compact in ("", "<>"):
        return None
    if not compact.startswith("<"):
        compact = "<" + compact
    if not compact.endswith(">"):
        compact += ">"
    return compact


def _parse_date(text: str) -> datetime | None:
    text = _clean_header_text(text)
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
        if parsed.tzinfo is None:
            # RFC 5322 "-0000": the time is UTC, the sender just says nothing about its own zone.
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _is_automated_local_part(local: str) -> bool:
    token = local.split("+", 1)[0]
    return re.sub(r"[-_.]", "", token) in _AUTOMATED_LOCAL_PARTS or bool(
        _AUTOMATED_LOCAL_PREFIX_RE.match(token)
    )


def _automated_reason(
    fields: dict[str, list[str]], from_: tuple[Address, ...], sender: tuple[Address, ...]
) -> str | None:
    def first(name: str) -> str:
        values = fields.get(name)
        return " ".join(values[0].split()) if values else ""

    if first("list-id"):
        return "List-Id header"
    if first("list-unsubscribe"):
        return "List-Unsubscribe header"
    precedence = first("precedence").lower()
    if precedence in _BULK_PRECEDENCE:
        return f"Precedence: {precedence}"
    auto_submitted = first("auto-submitted").split(";", 1)[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for label, addresses in (("From", from_), ("Sender", sender)):
        for address in addresses:
            if _is_automated_local_part(address.email.rpartition("@")[0]):
                return f"{label} address {address.email}"
    return None


def _best_effort(compute: Callable[[], T], default: T, what: str) -> T:
    """One unreadable field must not cost the others: log it and use the empty value."""
    try:
        return compute()
    except Exception:
        log.debug("unreadable %s header, left empty", what, exc_info=True)
        return default


def _headers_from_fields(fields: dict[str, list[str]]) -> MessageHeaders:
    hint = _best_effort(lambda: _charset_hint(fields), None, "Content-Type")

    def text_of(name: str) -> str:
        values = fields.get(name)
        return _header_text(values[0], hint) if values else ""

    def all_text_of(name: str) -> str:
        return " ".join(_header_text(value, hint) for value in fields.get(name, ()))

    def addresses(name: str) -> tuple[Address, ...]:
        return _best_effort(lambda: _parse_addresses(fields.get(name, ()), hint), (), name)

    def ids(name: str) -> tuple[str, ...]:
        return _best_effort(lambda: tuple(_message_ids(all_text_of(name))), (), name)

    message_ids = ids("message-id")
    message_id = (
        message_ids[0]
        if message_ids
        else _best_effort(lambda: _normalize_message_id(text_of("message-id") or None), None, "Message-ID")
    )
    from_ = addresses("from")
    sender = addresses("sender")
    reason = _best_effort(lambda: _automated_reason(fields, from_, sender), None, "automation")
    return MessageHeaders(
        message_id=message_id,
        subject=_best_effort(
            lambda: _clean_header_text(_decode_encoded_words(text_of("subject"))), "", "Subject"
        ),
        date=_best_effort(lambda: _parse_date(text_of("date")), None, "Date"),
        from_=from_,
        sender=sender,
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        in_reply_to=ids("in-reply-to"),
        references=ids("references"),
        is_automated=reason is not None,
        automated_reason=reason,
    )


def parse_headers(raw: bytes) -> MessageHeaders:
    """Read the header block only; never raises, a field that cannot be read comes back empty."""
    try:
        block, _ = _split_header_block(raw)
    except Exception:
        log.debug("header block could not be mended", exc_info=True)
        block = raw[:_MAX_HEADER_BYTES]
    return _headers_from_fields(_read_header_fields(block))


# ---------------------------------------------------------------------------------------------------------
# Content key


def _normalize_text(text: str) -> str:
    """Line endings to LF, trailing blanks per line and around the text gone, NFC, storable."""
    text = _scrub(text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def content_key_for(headers: MessageHeaders, body_text: str = "") -> str:
    """The key that identifies one message across every inbox it was delivered to.

    With a Message-ID the body is not needed, so a header-only pass can dedupe; without one the key is
    a hash of what every copy shares, so pass the message's body text (`ParsedMessage.text`).
    """
    message_id = _normalize_message_id(headers.message_id)
    if message_id is not None:
        key = "mid:" + message_id
        if len(key) <= CONTENT_KEY_MAX_LENGTH:
            return key
        return "mid:sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
    stable = [
        "threadline-content-key-v1",
        headers.date.isoformat() if headers.date else "",
        [address.email for address in headers.from_],
        [address.email for address in headers.to],
        [address.email for address in headers.cc],
        headers.subject,
        _normalize_text(body_text),
    ]
    return "sha256:" + hashlib.sha256(json.dumps(stable, separators=(",", ":")).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# HTML

_ALLOWED_TAGS = frozenset(
    {
        "p", "br", "div", "span", "b", "i", "u", "strong", "em", "a", "ul", "ol", "li",
        "table", "thead", "tbody", "tr", "td", "th", "blockquote", "pre", "code",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "img", "font",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES = {
    "*": {"title", "align"},
    "a": {"href"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
# Elements whose content must go with them; anything else unknown is unwrapped and its text kept.
_DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "xml", "noscript", "template"})
_LINK_SCHEMES = ("http:", "https:", "mailto:")
_EMBEDDED_IMAGE_RE = re.compile(r"data:image/(?:png|gif|jpe?g|webp|bmp)[;,]", re.IGNORECASE)


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # nh3 has already removed URLs whose scheme is not listed (that list admits cid: and data: for
    # images); what remains is narrowed per attribute here.
    if attribute == "src":
        source = value.strip()
        if source.lower().startswith("cid:") or _EMBEDDED_IMAGE_RE.match(source):
            return value
        return None
    if attribute == "href":
        return value if value.strip().lower().startswith(_LINK_SCHEMES) else None
    return value


_CLEANER = nh3.Cleaner(
    tags=set(_ALLOWED_TAGS),
    clean_content_tags=set(_DROPPED_WITH_CONTENT),
    attributes=_ALLOWED_ATTRIBUTES,
    attribute_filter=_filter_attribute,
    strip_comments=True,
    link_rel="noopener noreferrer nofollow",
    url_schemes={"http", "https", "mailto", "cid", "data"},
    url_relative="deny",
)


def sanitize_html(html: str) -> str:
    """HTML safe to show inside the CRM: formatting kept, active content and remote loads removed."""
    return _CLEANER.clean(_scrub(html))


_BLOCK_TAGS = frozenset(
    {
        "p", "div", "br", "li", "ul", "ol", "tr", "table", "thead", "tbody", "blockquote", "pre", "hr",
        "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer", "address", "dt", "dd",
    }
)  # fmt: skip
_QUOTE_PREFIX_RE = re.compile(r"^((?:> )*)(.*)$")
_WHITESPACE_RE = re.compile(r"\s+")


class _HtmlText(HTMLParser):
    """Plain text of an HTML body; blockquotes become '> ' lines so snippets can drop them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._quote_depth = 0
        self._skip_depth = 0
        self._pre_depth = 0

    def _newline(self) -> None:
        self._chunks.append("\n" + "> " * self._quote_depth)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self._skip_depth += 1
            return
        if tag == "blockquote":
            self._quote_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
        if tag in _BLOCK_TAGS:
            self._newline()
        elif tag in ("td", "th"):
            self._chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_WITH_CONTENT:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _BLOCK_TAGS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            for index, line in enumerate(data.split("\n")):
                if index:
                    self._newline()
                self._chunks.append(line)
        else:
            self._chunks.append(_WHITESPACE_RE.sub(" ", data))

    def text(self) -> str:
        lines = []
        for line in "".join(self._chunks).split("\n"):
            match = _QUOTE_PREFIX_RE.match(line)
            prefix, body = (match[1], match[2].strip()) if match else ("", line.strip())
            lines.append(prefix + body if body else "")
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _html_to_text(html: str) -> str:
    extractor = _HtmlText()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:
        # html.parser still has assertion paths for some malformed declarations.
        log.debug("HTML text extraction failed, stripping tags instead", exc_info=True)
        return _normalize_text(unescape(re.sub(r"<[^>]*>", " ", html)))
    return _normalize_text(extractor.text())


# ---------------------------------------------------------------------------------------------------------
# Snippet

_REPLY_HEADER_RES = (
    re.compile(r"^On\b.*\bwrote:$", re.IGNORECASE),
    re.compile(r"^Le\b.*\ba\s+écrit\s*:$", re.IGNORECASE),
    re.compile(r"^Am\b.*\bschrieb\b.*:$", re.IGNORECASE),
    re.compile(r"^-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine)\s*-{2,}$", re.I),
    re.compile(r"^\*?From:.*\bSent:", re.IGNORECASE),
)
_WRAPPED_REPLY_HEADER_START_RE = re.compile(r"^(?:On|Le|Am)\s", re.IGNORECASE)
_OUTLOOK_FROM_RE = re.compile(r"^\*?(?:From|De|Von):\*?\s", re.IGNORECASE)
_OUTLOOK_NEXT_RE = re.compile(r"^\*?(?:Sent|Date|Envoyé|Gesendet):\*?\s", re.IGNORECASE)
_SEPARATOR_LINE_RE = re.compile(r"^[-_=*\s]*$")


def _starts_quoted_history(lines: Sequence[str], index: int) -> bool:
    line = lines[index].strip()
    if any(pattern.match(line) for pattern in _REPLY_HEADER_RES):
        return True
    following = [candidate.strip() for candidate in lines[index + 1 : index + 4]]
    # Gmail wraps a long "On <date>, <name> <address> wrote:" over two lines.
    if _WRAPPED_REPLY_HEADER_START_RE.match(line) and following:
        joined = f"{line} {following[0]}"
        if any(pattern.match(joined) for pattern in _REPLY_HEADER_RES[:3]):
            return True
    return bool(_OUTLOOK_FROM_RE.match(line) and any(_OUTLOOK_NEXT_RE.match(next_) for next_ in following))


def make_snippet(text: str, limit: int = SNIPPET_LIMIT) -> str:
    """A one-line preview of what the author wrote: quotes, reply history and signature left out."""
    if limit <= 0:
        return ""
    lines = text.splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.rstrip() == "--" or _starts_quoted_history(lines, index):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    while kept and _SEPARATOR_LINE_RE.match(kept[-1]):
        kept.pop()
    collapsed = " ".join(" ".join(kept).split())
    if len(collapsed) <= limit:
        return collapsed
    cut = collapsed[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "\u2026"


# ---------------------------------------------------------------------------------------------------------
# Bodies and attachments


@dataclass
class _Bodies:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


# mail-parser names a part that has no filename with ten random lower-case letters.
_GENERATED_NAME_RE = re.compile(r"[a-z]{10}\.(?:txt|rtf)")
_PATH_SEPARATOR_RE = re.compile(r"[/\\]")
_MAX_FILENAME_LENGTH = 255


def _clean_filename(name: str) -> str:
    """A display name without directories, controls or absurd length."""
    name = _clean_header_text(_PATH_SEPARATOR_RE.split(name)[-1]).strip(" .")
    if len(name) > _MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = stem[: _MAX_FILENAME_LENGTH - len(extension) - 1] + "." + extension
        else:
            name = name[:_MAX_FILENAME_LENGTH]
    return name


def _fallback_filename(content_type: str, index: int, content_id: str = "") -> str:
    extension = mimetypes.guess_extension(content_type) or ""
    # Outlook's Content-IDs look like "image001.png@01DA2B3C.4D5E6F70": the part before '@' is a name.
    stem = _clean_filename(content_id.strip("<> ").split("@", 1)[0]) if content_id else ""
    if not stem:
        return f"attachment-{index}{extension}"
    return stem if "." in stem else stem + extension


def _make_attachment(filename: str, content_type: str, data: bytes, max_bytes: int) -> Attachment:
    size = len(data)
    return Attachment(
        filename=filename,
        content_type=content_type,
        size=size,
        content=data if size <= max_bytes else None,
    )


def _attachment_from_mailparser(
    item: dict[str, Any], raw: bytes, index: int, max_bytes: int
) -> Attachment | None:
    content_type = str(item.get("mail_content_type") or "application/octet-stream").strip().lower()
    disposition = str(item.get("content-disposition") or "").strip().lower()
    # mail-parser lists a named inline text part both as body and as attachment; it is a body. A multipart
    # container listed for its Content-ID has no content of its own: its parts are listed one by one.
    if (content_type in ("text/plain", "text/html") and disposition.startswith("inline")) or (
        content_type.startswith("multipart/")
    ):
        return None
    payload = item.get("payload")
    if item.get("binary"):
        data = _b64decode_lenient(str(payload or "").encode("ascii", "ignore"))
    elif isinstance(payload, bytes):
        data = payload
    else:
        data = _encode_text(str(payload or ""))
    given = str(item.get("filename") or "")
    content_id = str(item.get("content-id") or "")
    if content_id and given == content_id:
        filename = _fallback_filename(content_type, index, content_id)
    elif _GENERATED_NAME_RE.fullmatch(given) and given.encode("ascii") not in raw:
        filename = _fallback_filename(content_type, index)
    else:
        filename = _clean_filename(given) or _fallback_filename(content_type, index)
    return _make_attachment(filename, content_type, data, max_bytes)


def _extract_with_mailparser(raw: bytes, max_attachment_bytes: int) -> _Bodies:
    parsed = mailparser.parse_from_bytes(raw)
    bodies = _Bodies()
    # mail-parser hands 7bit parts back undecoded, so iso-2022-jp text arrives as escape sequences.
    bodies.plain = [_repair_iso2022(text) for text in parsed.text_plain if isinstance(text, str)]
    bodies.html = [_repair_iso2022(text) for text in parsed.text_html if isinstance(text, str)]
    for item in parsed.attachments:
        if isinstance(item, dict):
            attachment = _attachment_from_mailparser(
                item, raw, len(bodies.attachments) + 1, max_attachment_bytes
            )
            if attachment is not None:
                bodies.attachments.append(attachment)
    return bodies


def _part_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw_payload = part.get_payload()
    return _encode_text(raw_payload) if isinstance(raw_payload, str) else b""


def _part_filename(part: Message) -> str:
    return part.get_filename() or ""


def _extract_with_stdlib(raw: bytes, max_attachment_bytes: int) -> _Bodies:
    message = BytesParser(policy=compat32).parsebytes(raw)
    bodies = _Bodies()
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = _best_effort(part.get_content_disposition, None, "Content-Disposition")
        filename = _best_effort(functools.partial(_part_filename, part), "", "filename")
        data = _part_bytes(part)
        if not filename and disposition != "attachment" and content_type in ("text/plain", "text/html"):
            charset = _best_effort(part.get_content_charset, None, "charset")
            text = _repair_iso2022(_decode_bytes(data, charset))
            (bodies.html if content_type == "text/html" else bodies.plain).append(text)
        elif (
            filename or disposition == "attachment" or part.get_content_maintype() not in ("text", "message")
        ):
            index = len(bodies.attachments) + 1
            name = _clean_filename(_decode_encoded_words(str(filename)))
            bodies.attachments.append(
                _make_attachment(
                    name or _fallback_filename(content_type, index), content_type, data, max_attachment_bytes
                )
            )
    return bodies


def _extract_bodies(raw: bytes, max_attachment_bytes: int) -> _Bodies:
    # Warnings from third-party parsing are about the sender's MIME, and tests turn warnings into errors.
    try:
        with warnings.catch_warnings(action="ignore"):
            return _extract_with_mailparser(raw, max_attachment_bytes)
    except Exception as exc:
        first_failure = f"mail-parser: {type(exc).__name__}: {exc}"
        log.info("%s; falling back to the stdlib email package", first_failure)
    try:
        with warnings.catch_warnings(action="ignore"):
            return _extract_with_stdlib(raw, max_attachment_bytes)
    except Exception as exc:
        reason = f"cannot read the MIME structure ({first_failure}; email: {type(exc).__name__}: {exc})"
        raise ParseError(reason[:500]) from exc


def parse_message(
    raw: bytes,
    *,
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> ParsedMessage:
    """Everything the CRM shows of a message; raises ParseError only if it is not readable as one."""
    block, rest = _split_header_block(raw)
    fields = _read_header_fields(block)
    headers = _headers_from_fields(fields)
    size = len(raw)
    if size > max_message_bytes:
        return ParsedMessage(
            headers=headers,
            content_key=content_key_for(headers),
            text="",
            html=None,
            snippet="",
            attachments=(),
            truncated=True,
            size=size,
        )
    if not raw.strip():
        raise ParseError("empty message")
    if not fields:
        raise ParseError("no header fields: not an RFC 5322 message")
    bodies = _extract_bodies(_mime_only(block) + rest, max_attachment_bytes)
    html = sanitize_html("\n".join(bodies.html)).strip() if bodies.html else None
    if not html:
        html = None
    text = "\n\n".join(filter(None, (_normalize_text(part) for part in bodies.plain)))
    if not text and html is not None:
        text = _html_to_text(html)
    return ParsedMessage(
        headers=headers,
        content_key=content_key_for(headers, text),
        text=text,
        html=html,
        snippet=make_snippet(text),
        attachments=tuple(bodies.attachments),
        truncated=False,
        size=size,
    )


# ---------------------------------------------------------------------------------------------------------
# Free-mail domains

_GLOB_CHARACTERS = frozenset("*?[")


def _normalize_domain_entry(entry: str) -> str:
    return entry.split("#", 1)[0].strip().lower().lstrip("@").rstrip(".")


def load_freemail_domains(extra: Iterable[str] = ()) -> frozenset[str]:
    """Domains and globs from daemon/freemail.txt plus `extra` (a deployment's own additions)."""
    lines = FREEMAIL_FILE.read_text(encoding="utf-8").splitlines()
    entries = (_normalize_domain_entry(entry) for entry in (*lines, *extra))
    return frozenset(entry for entry in entries if entry)


def is_freemail(domain: str, freemail: frozenset[str]) -> bool:
    """Whether an address domain belongs to a free-mail provider; entries may be fnmatch globs."""
    domain = domain.strip().lower().rstrip(".")
    if not domain:
        return False
    if domain in freemail:
        return True
    return any(
        fnmatch.fnmatchcase(domain, pattern)
        for pattern in freemail
        if not _GLOB_CHARACTERS.isdisjoint(pattern)
    )
