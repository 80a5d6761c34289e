"""A whole message at once, for callers that hold its raw bytes: quarantine retries, the mbox import and
benchmarks. The sync itself reads headers and bodies apart (headers first, bodies in worker processes) and
puts them together the same way, with `assemble`."""

from __future__ import annotations

from daemon.parsing.body import parse_body
from daemon.parsing.content_key import content_key
from daemon.parsing.headers import parse_headers
from models.messages import Email, MessageBody, MessageHeaders
from settings import MatchingSettings


def parse_message(raw: bytes, limits: MatchingSettings | None = None) -> Email:
    """Headers, body and content key of a raw message; ParseError if it cannot be read as one."""
    limits = limits or MatchingSettings()
    headers = parse_headers(raw, limits.max_header_bytes)
    return assemble(headers, parse_body(raw, limits))


def assemble(headers: MessageHeaders, body: MessageBody) -> Email:
    """The stored form of a message whose headers and body were read apart."""
    return Email(headers=headers, body=body, content_key=content_key(headers, body.text))
