"""The body parser: raw message bytes to `MessageBody`, the one module that imports mail-parser.

mail-parser is Threadline's body parser: it walks the MIME tree and hands back the text and HTML bodies and
the attachments. Around it, this module bounds what one message can cost, because the sync must never be
held up by a single message:

- A message over `max_message_bytes` keeps its headers only (the sync does not even fetch it: it judges by
  the size the server reports).
- Every Content-* field of every MIME part is cut at `PART_FIELD_MAX_BYTES` and runs of empty parameters
  (";;;;") collapse to one, before any parser sees them: the standard library parses MIME parameters in
  quadratic time, and mail-parser asks for them three times per part, so a 64 KB Content-Type of 60,000
  semicolons cost 14 s.
- The tree is walked to `max_mime_depth` levels and `max_mime_parts` parts (`[matching]` settings); what lies
  beyond is left out and the body is marked truncated. MIME nested deeper than Python can parse at all is a
  ParseError.
- The sync runs this in worker processes (daemon.workers) with a time limit, so whatever a cap does not
  catch still ends in quarantine instead of a stalled mailbox.

mail-parser gets only the Content-* and MIME-Version fields of the top-level header block: the headers are
read by daemon.parsing.headers, and parsing them again was most of mail-parser's cost. The stdlib MIME tree is
built here (as mail-parser would build it, by daemon.parsing.mime_tree) so that the caps apply to it before
mail-parser walks it. Two of
mail-parser's habits are corrected: 7-bit ISO-2022 bodies (iso-2022-jp mail) come back undecoded, and parts
without a file name get a random one (see daemon.parsing.attachments).

A second path remains on purpose: when mail-parser raises on a tree it cannot walk, the same tree is walked
with the standard library alone, because a message whose bodies we can still read must not be lost to one
library's bug. `ParseError` is raised only for input that is not a message at all (empty, no header field)
or that neither can walk.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_string
from email.message import Message
from typing import Any, TypeVar

import mailparser

from daemon.parsing.attachments import attachment_name, clean_filename, fallback_filename, make_attachment
from daemon.parsing.encoded_words import decode_encoded_words
from daemon.parsing.header_block import mime_only, split_header_block
from daemon.parsing.headers import best_effort
from daemon.parsing.html import html_to_text, sanitize_html
from daemon.parsing.mime_tree import mime_tree
from daemon.parsing.snippet import make_snippet
from daemon.parsing.text import b64decode_lenient, decode_bytes, encode_text, normalize_text, repair_iso2022
from models.messages import Attachment, MessageBody
from settings import MatchingSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# mail-parser logs a WARNING for every MIME oddity a sender produces ("content 'alternative' not
# handled"); that is noise about other people's mail, not about our health. Levels alone do not hold
# because the process-wide logging setup raises them back to WARNING, so stop the records at its root.
_MAILPARSER_LOG = logging.getLogger("mailparser")
_MAILPARSER_LOG.propagate = False
if not any(isinstance(handler, logging.NullHandler) for handler in _MAILPARSER_LOG.handlers):
    _MAILPARSER_LOG.addHandler(logging.NullHandler())

# Longer than any real Content-Type or Content-Disposition (a 255-character file name, percent-encoded in
# RFC 2231 pieces, fits several times over); short enough that quadratic parameter parsing stays in
# milliseconds.
PART_FIELD_MAX_BYTES = 4096

_HEADER_FIELD_RE = re.compile(rb"(?m)^[!-9;-~]+:")
_FIELD_END_RE = re.compile(rb"\n(?![ \t])")
_EMPTY_PARAMETERS_RE = re.compile(rb";[\s;]*;")


class ParseError(Exception):
    """The input cannot be read as a message at all; the text says why, for the quarantine record."""


def parse_body(raw: bytes, limits: MatchingSettings) -> MessageBody:
    """Everything the CRM shows of a message besides its headers; ParseError only if it is not one."""
    if len(raw) > limits.max_message_bytes:
        return MessageBody.headers_only()
    if not raw.strip():
        raise ParseError("empty message")
    split = split_header_block(raw, limits.max_header_bytes)
    if not _HEADER_FIELD_RE.search(split.block):
        raise ParseError("no header fields: not an RFC 5322 message")
    data = cap_part_fields(mime_only(split.block) + split.body)
    message = _mime_tree(data)
    pruned = _prune(message, limits.max_mime_depth, limits.max_mime_parts)
    bodies = _extract_bodies(message, data, limits.max_attachment_bytes)
    html = sanitize_html("\n".join(bodies.html)).strip() if bodies.html else None
    if not html:
        html = None
    text = "\n\n".join(filter(None, (normalize_text(part) for part in bodies.plain)))
    if not text and html is not None:
        text = html_to_text(html)
    return MessageBody(
        text=text,
        html=html,
        snippet=make_snippet(text),
        attachments=tuple(bodies.attachments),
        truncated=pruned,
        failed_recipients=best_effort(lambda: failed_recipients(message), (), "message/delivery-status"),
    )


def failed_recipients(message: Message) -> tuple[str, ...]:
    """The recipients a delivery status report (RFC 3464) says failed: per-recipient blocks of its
    message/delivery-status part with `Action: failed`, by Final-Recipient (else Original-Recipient)."""
    if message.get_content_type() != "multipart/report":
        return ()
    found: dict[str, None] = {}
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            if not str(block.get("action", "")).strip().lower().startswith("failed"):
                continue
            recipient = str(block.get("final-recipient") or block.get("original-recipient") or "")
            address = recipient.rpartition(";")[2].strip().strip("<>").lower()
            if "@" in address:
                found[address] = None
    return tuple(found)


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # some servers label it as text: read its blocks (per-message, then per-recipient) as header blocks
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    return [message_from_string(chunk) for chunk in re.split(r"\r?\n\s*\r?\n", text) if chunk.strip()]


def cap_part_fields(data: bytes) -> bytes:
    """Every Content-* field cut at PART_FIELD_MAX_BYTES, with runs of empty parameters collapsed."""
    lowered = data.lower()
    pieces: list[bytes] = []
    position = 0
    for start in _field_starts(lowered):
        if start < position:
            continue
        end_match = _FIELD_END_RE.search(data, start)
        end = end_match.start() if end_match is not None else len(data)
        if end - start <= 256 and b";;" not in data[start:end]:
            continue
        field_bytes = data[start:end]
        capped = _EMPTY_PARAMETERS_RE.sub(b";", field_bytes)
        if len(capped) > PART_FIELD_MAX_BYTES:
            cut = capped.rfind(b";", 0, PART_FIELD_MAX_BYTES)
            capped = capped[: cut if cut > 0 else PART_FIELD_MAX_BYTES].rstrip(b"\r")
        if capped != field_bytes:
            pieces.append(data[position:start])
            pieces.append(capped)
            position = end
    if not pieces:
        return data
    pieces.append(data[position:])
    return b"".join(pieces)


def _field_starts(lowered: bytes) -> Iterator[int]:
    """Where lines starting with "content-" begin (found with bytes.find: a regular expression testing
    every line of a 25 MB message costs a hundred times more)."""
    if lowered.startswith(b"content-"):
        yield 0
    start = 0
    while (start := lowered.find(b"\ncontent-", start)) >= 0:
        start += 1
        yield start


def _mime_tree(data: bytes) -> Message:
    try:
        with warnings.catch_warnings(action="ignore"):
            return mime_tree(data)
    except RecursionError as exc:
        raise ParseError("cannot read the MIME structure: MIME nesting too deep to parse") from exc
    except Exception as exc:
        raise ParseError(f"cannot read the MIME structure: {type(exc).__name__}: {exc}"[:500]) from exc


def _prune(message: Message, max_depth: int, max_parts: int) -> bool:
    """Leave out parts nested deeper than max_depth and every part after the first max_parts (in document
    order); True when something was left out."""
    kept: set[int] = set()
    containers: list[tuple[Message, int]] = []
    stack: list[tuple[Message, int]] = [(message, 1)]
    pruned = False
    while stack:
        part, depth = stack.pop()
        if len(kept) >= max_parts:
            pruned = True
            break
        kept.add(id(part))
        children = part.get_payload() if part.is_multipart() else None
        if not isinstance(children, list):
            continue
        if depth >= max_depth:
            if children:
                part.set_payload([])
                pruned = True
            continue
        containers.append((part, depth))
        stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    if pruned:
        for part, _ in containers:
            children = part.get_payload()
            if isinstance(children, list):
                part.set_payload([child for child in children if id(child) in kept])
    return pruned


@dataclass
class _Bodies:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _extract_bodies(message: Message, raw: bytes, max_attachment_bytes: int) -> _Bodies:
    # Warnings from third-party parsing are about the sender's MIME, and tests turn warnings into errors.
    try:
        with warnings.catch_warnings(action="ignore"):
            return _extract_with_mailparser(message, raw, max_attachment_bytes)
    except Exception as exc:
        first_failure = f"mail-parser: {type(exc).__name__}: {exc}"
        log.info("%s; falling back to the stdlib email package", first_failure)
    try:
        with warnings.catch_warnings(action="ignore"):
            return _extract_with_stdlib(message, max_attachment_bytes)
    except Exception as exc:
        reason = f"cannot read the MIME structure ({first_failure}; email: {type(exc).__name__}: {exc})"
        raise ParseError(reason[:500]) from exc


def _extract_with_mailparser(message: Message, raw: bytes, max_attachment_bytes: int) -> _Bodies:
    parsed = mailparser.MailParser(message)
    bodies = _Bodies()
    # mail-parser hands 7bit parts back undecoded, so iso-2022-jp text arrives as escape sequences.
    bodies.plain = [repair_iso2022(text) for text in parsed.text_plain if isinstance(text, str)]
    bodies.html = [repair_iso2022(text) for text in parsed.text_html if isinstance(text, str)]
    for item in parsed.attachments:
        if isinstance(item, dict):
            attachment = _attachment_from_mailparser(
                item, raw, len(bodies.attachments) + 1, max_attachment_bytes
            )
            if attachment is not None:
                bodies.attachments.append(attachment)
    return bodies


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
        data = b64decode_lenient(str(payload or "").encode("ascii", "ignore"))
    elif isinstance(payload, bytes):
        data = payload
    else:
        data = encode_text(str(payload or ""))
    filename = attachment_name(
        str(item.get("filename") or ""), content_type, index, str(item.get("content-id") or ""), raw
    )
    return make_attachment(filename, content_type, data, max_bytes)


def _part_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw_payload = part.get_payload()
    return encode_text(raw_payload) if isinstance(raw_payload, str) else b""


def _part_filename(part: Message) -> str:
    return part.get_filename() or ""


def _extract_with_stdlib(message: Message, max_attachment_bytes: int) -> _Bodies:
    bodies = _Bodies()
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        disposition = best_effort(part.get_content_disposition, None, "Content-Disposition")
        filename = best_effort(functools.partial(_part_filename, part), "", "filename")
        data = _part_bytes(part)
        if not filename and disposition != "attachment" and content_type in ("text/plain", "text/html"):
            charset = best_effort(part.get_content_charset, None, "charset")
            text = repair_iso2022(decode_bytes(data, charset))
            (bodies.html if content_type == "text/html" else bodies.plain).append(text)
        elif (
            filename or disposition == "attachment" or part.get_content_maintype() not in ("text", "message")
        ):
            index = len(bodies.attachments) + 1
            name = clean_filename(decode_encoded_words(str(filename)))
            bodies.attachments.append(
                make_attachment(
                    name or fallback_filename(content_type, index), content_type, data, max_attachment_bytes
                )
            )
    return bodies
