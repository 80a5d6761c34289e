"""Header values to display text: unfolding, raw 8-bit bytes and RFC 2047 encoded words.

8-bit header bytes are tried as UTF-8 (RFC 6532), then the charset the body declares, then Windows-1252 or
Latin-1. Encoded words are decoded leniently (bad base64, unknown charsets, adjacent words joined before
decoding so a multi-byte character split across two words survives). Nothing here raises.
"""

from __future__ import annotations

import binascii
import re

from daemon.parsing.text import b64decode_lenient, decode_bytes

_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_ENCODED_RUN_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?]*\?=(?:\s*=\?[^?\s]+\?[bBqQ]\?[^?]*\?=)*")
_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue001")
_CHARSET_PARAM_RE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:+-]+)", re.IGNORECASE)


def header_text(value: str, charset_hint: str | None) -> str:
    """Unfold a raw header value and turn its 8-bit bytes (carried as surrogates) into text."""
    text = _FOLD_RE.sub("", value)
    if text.isascii():
        return text
    try:
        data = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text
    return decode_bytes(data, "utf-8", charset_hint)


def charset_hint(fields: dict[str, list[str]]) -> str | None:
    """The charset the top-level Content-Type declares: the best guess for raw 8-bit header bytes."""
    content_type = fields.get("content-type")
    if not content_type:
        return None
    match = _CHARSET_PARAM_RE.search(content_type[0][:4096])
    return match[1] if match else None


def _decode_word_payload(encoding: str, payload: str) -> bytes:
    if encoding in "bB":
        return b64decode_lenient(payload.encode("ascii", "ignore"))
    return binascii.a2b_qp(payload.encode("utf-8", "surrogateescape"), header=True)


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words leniently, joining adjacent words before charset decoding."""
    if "=?" not in text:
        return text
    pieces: list[str] = []
    run: list[tuple[str, bytearray]] = []

    def flush() -> None:
        pieces.extend(decode_bytes(bytes(data), charset) for charset, data in run)
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


class EncodedWordStash:
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
        self._decoded.append(decode_encoded_words(match[0]))
        return f"\ue000{len(self._decoded) - 1}\ue001"

    def _original(self, match: re.Match[str]) -> str:
        index = int(match[1])
        return self._decoded[index] if index < len(self._decoded) else ""
