"""Bytes to text: the charset a sender declared (or should have), decoded leniently, made storable.

Mail declares charsets loosely: labels name a subset of what was used (ISO-8859-1 for Windows-1252 text),
bodies declare nothing, 7-bit ISO-2022 text arrives undecoded. `decode_bytes` tries the declared charsets
strictly, then UTF-8, then a lossy decode, and never raises. `scrub` removes what no database column can hold
(NUL, lone surrogates); `normalize_text` gives the line endings and Unicode form the content key relies on.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import re
import unicodedata

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
# blanks at the end of each line (str.isspace blanks, as str.rstrip strips them), line breaks kept
_TRAILING_BLANKS_RE = re.compile(r"[^\S\n]+$", re.MULTILINE)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=256)
def codec_name(charset: str | None) -> str | None:
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


def decode_bytes(data: bytes, *charsets: str | None) -> str:
    """Readable text from sender bytes: declared charsets strictly, then UTF-8, then a lossy decode."""
    tried: list[str] = []
    for charset in (*charsets, "utf-8"):
        codec = codec_name(charset)
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


def repair_iso2022(text: str) -> str:
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


def scrub(text: str) -> str:
    """Drop what a database cannot store: NUL characters and lone surrogates some codecs produce."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text


def one_line(text: str) -> str:
    """Display text on one line: ISO-2022 repaired, control characters gone, whitespace collapsed."""
    text = scrub(repair_iso2022(text))
    return " ".join(_CONTROL_RE.sub(" ", text).split())


def normalize_text(text: str) -> str:
    """Line endings to LF, trailing blanks per line and around the text gone, NFC, storable."""
    text = scrub(text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    return _TRAILING_BLANKS_RE.sub("", text).strip("\n")


def b64decode_lenient(data: bytes) -> bytes:
    """Decode base64 the way mail clients do: ignore stray characters, repair missing padding."""
    cleaned = re.sub(rb"[^A-Za-z0-9+/=]", b"", data).split(b"=", 1)[0]
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
    except binascii.Error:
        return b""


def encode_text(text: str) -> bytes:
    """Text back to bytes, keeping undecodable bytes (carried as surrogates) as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")
