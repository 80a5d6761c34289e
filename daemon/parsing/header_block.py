"""The header block of a message: found, capped, mended, and read into raw field values.

Decisions worth knowing:

- The block ends at the first blank line. It is cut at `max_header_bytes` (`[matching] max_header_bytes`,
  100 KB by default, the limit Postfix applies to the headers it accepts): a longer block is hostile or broken
  (one with 75,000 Cc addresses is 2 MB) and reading further would only cost time. The cut falls at the end of
  a line, so no address is read half-written; `HeaderBlock.truncated` says it happened.
- A damaged block is mended before parsing: a junk line between fields is joined to the field above, and the
  obsolete "Name : value" form is accepted, where Python's parser would end the headers (and lose From, To
  and Subject below). The body parser reads the same mended block, so headers and body agree on where the
  body starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_HEADER_BYTES = 100 * 1024

_HEADER_END_RE = re.compile(rb"\n\r?\n")
FIELD_LINE_RE = re.compile(rb"[!-9;-~]+:")
_OBSOLETE_FIELD_NAME_RE = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.MULTILINE)
# A line that is neither a field, a continuation, an mbox separator nor the blank end of the block.
# Anchored on the newline itself so the scan jumps from line to line instead of testing every byte.
_SUSPECT_HEADER_LINE_RE = re.compile(rb"\n(?![!-9;-~]+:|[ \t]|From |\r?\n|\r?$)")
_FIELD_SPLIT_RE = re.compile(r"\r?\n(?![ \t])")
_FIELD_NAME_RE = re.compile(r"[!-9;-~]+[ \t]*")


@dataclass(frozen=True)
class HeaderBlock:
    """The (mended) header block through its blank line, and the body after it."""

    block: bytes
    body: bytes
    truncated: bool


def split_header_block(raw: bytes, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> HeaderBlock:
    """The header block (through its blank line, capped) and the rest, with a damaged block mended.

    Python's parser ends the headers at the first line that is not a field, so one junk line in the
    middle (spam tools, broken folding) would turn From, To and Subject below it into body text, and
    the obsolete "Name : value" form is not read at all. A junk line followed by more fields is joined
    to the field above as a continuation; junk after the last field is where a body starts without the
    blank line, and stays as it is.
    """
    end = _HEADER_END_RE.search(raw, 0, max_header_bytes + 2)
    truncated = False
    if end is not None:
        block, rest = raw[: end.end()], raw[end.end() :]
    elif len(raw) <= max_header_bytes:
        block, rest = raw, b""
    else:
        # no blank line within the cap: cut after the last whole line, and skip the rest of the headers
        cut = raw.rfind(b"\n", 0, max_header_bytes) + 1 or max_header_bytes
        block = raw[:cut] + (b"\r\n" if raw[:cut].endswith(b"\r\n") else b"\n")
        after = _HEADER_END_RE.search(raw, cut)
        rest = raw[after.end() :] if after is not None else b""
        truncated = True
    return HeaderBlock(_mend(block), rest, truncated)


def _mend(block: bytes) -> bytes:
    if not _SUSPECT_HEADER_LINE_RE.search(b"\n" + block):
        return block
    lines = _OBSOLETE_FIELD_NAME_RE.sub(rb"\1:", block).splitlines(keepends=True)
    last_field = max((i for i, line in enumerate(lines) if FIELD_LINE_RE.match(line)), default=-1)
    for index in range(last_field):
        line = lines[index]
        is_mbox_separator = index == 0 and line.startswith(b"From ")
        if line.strip() and not (is_mbox_separator or FIELD_LINE_RE.match(line) or line[:1] in b" \t"):
            lines[index] = b" " + line
    return b"".join(lines)


def mime_only(block: bytes) -> bytes:
    """The header block reduced to the fields that shape the MIME tree, for the body parser.

    Headers are read by daemon.parsing.headers; handing mail-parser the Received chain, addresses and dates
    would only make it parse them again (most of its cost) and expose it to their defects.
    """
    kept: list[bytes] = []
    keep = False
    lines = block.splitlines(keepends=True)
    body_start: list[bytes] = []
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if keep:
                kept.append(line)
            continue
        if not FIELD_LINE_RE.match(line):
            if index == 0 and line.startswith(b"From "):
                continue
            # The blank line, or the first body line of a message that has none before its body.
            body_start = lines[index:] if line.strip() else []
            break
        name = line.split(b":", 1)[0].lower()
        keep = name.startswith(b"content-") or name == b"mime-version"
        if keep:
            kept.append(line)
    kept.append(b"\r\n" if block.endswith(b"\r\n") else b"\n")
    return b"".join(kept + body_start)


def read_header_fields(block: bytes) -> dict[str, list[str]]:
    """Header name (lower case) -> raw values in order (folding kept, 8-bit bytes carried as surrogates),
    read from a mended header block the way the stdlib's compat32 parser reads it, ten times faster."""
    fields: dict[str, list[str]] = {}
    text = block.decode("ascii", "surrogateescape")
    for field in _FIELD_SPLIT_RE.split(text):
        name, colon, value = field.partition(":")
        if not colon or not name or name[0] in " \t" or not _FIELD_NAME_RE.fullmatch(name):
            continue  # an mbox "From " line, the blank line, or what follows a damaged block
        fields.setdefault(name.strip().lower(), []).append(value.lstrip(" \t").rstrip("\r\n"))
    return fields
