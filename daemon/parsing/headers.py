"""The cheap pass every message gets: its header block read into `MessageHeaders`.

Only the header block is read (stdlib parser, compat32) and everything is decoded here (see encoded_words).
It never raises: a field that cannot be read comes back empty. It reports facts only: the list headers,
Precedence and Auto-Submitted are handed on as they are, and whether they make the mail automated is
daemon.matching's judgement, like everything else about who the mail concerns.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from daemon.parsing.addresses import parse_addresses
from daemon.parsing.encoded_words import charset_hint, decode_encoded_words, header_text
from daemon.parsing.header_block import DEFAULT_MAX_HEADER_BYTES, read_header_fields, split_header_block
from daemon.parsing.text import one_line
from models.messages import Address, MessageHeaders

log = logging.getLogger(__name__)

T = TypeVar("T")

_MESSAGE_ID_RE = re.compile(r"<([^<>]*)>")


def parse_headers(raw: bytes, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> MessageHeaders:
    """Read the header block of a message (or of a header-only fetch); never raises."""
    try:
        split = split_header_block(raw, max_header_bytes)
        block, truncated = split.block, split.truncated
    except Exception:
        log.debug("header block could not be mended", exc_info=True)
        block, truncated = raw[:max_header_bytes], len(raw) > max_header_bytes
    return headers_from_fields(read_header_fields(block), truncated=truncated)


def headers_from_fields(fields: dict[str, list[str]], *, truncated: bool = False) -> MessageHeaders:
    hint = best_effort(lambda: charset_hint(fields), None, "Content-Type")

    def text_of(name: str) -> str:
        values = fields.get(name)
        return header_text(values[0], hint) if values else ""

    def all_text_of(name: str) -> str:
        return " ".join(header_text(value, hint) for value in fields.get(name, ()))

    def addresses(name: str) -> tuple[Address, ...]:
        return best_effort(lambda: parse_addresses(fields.get(name, ()), hint), (), name)

    def ids(name: str) -> tuple[str, ...]:
        return best_effort(lambda: tuple(message_ids(all_text_of(name))), (), name)

    def first(name: str) -> str:
        values = fields.get(name)
        return " ".join(values[0][:1000].split()) if values else ""

    found_ids = ids("message-id")
    message_id = (
        found_ids[0]
        if found_ids
        else best_effort(lambda: normalize_message_id(text_of("message-id") or None), None, "Message-ID")
    )
    return MessageHeaders(
        message_id=message_id,
        subject=best_effort(lambda: one_line(decode_encoded_words(text_of("subject"))), "", "Subject"),
        date=best_effort(lambda: _parse_date(text_of("date")), None, "Date"),
        from_=addresses("from"),
        sender=addresses("sender"),
        reply_to=addresses("reply-to"),
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        in_reply_to=ids("in-reply-to"),
        references=ids("references"),
        list_id=first("list-id"),
        list_unsubscribe=bool(first("list-unsubscribe")),
        precedence=first("precedence").lower(),
        auto_submitted=first("auto-submitted").split(";", 1)[0].strip().lower(),
        truncated=truncated,
        delivery_report=_is_delivery_report(first("content-type")),
    )


def _is_delivery_report(content_type: str) -> bool:
    """Content-Type multipart/report; report-type=delivery-status (RFC 3462, 3464)."""
    value = content_type.lower()
    return value.startswith("multipart/report") and "delivery-status" in value


def message_ids(text: str) -> list[str]:
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


def normalize_message_id(value: str | None) -> str | None:
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
    text = one_line(text)
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


def best_effort(compute: Callable[[], T], default: T, what: str) -> T:
    """One unreadable field must not cost the others: log it and use the empty value."""
    try:
        return compute()
    except Exception:
        log.debug("unreadable %s header, left empty", what, exc_info=True)
        return default
