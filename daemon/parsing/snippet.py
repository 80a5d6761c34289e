"""The one-line preview of an email: what its author wrote, without quotes, reply history or signature.

Reply history is recognised by the lines mail clients put above it ("On ... wrote:", Outlook's "From: ...
Sent: ..." block, their French and German forms); '>' lines are quotes; "--" starts a signature. Only the
first lines are read: as soon as the preview is full, the rest of the text cannot change it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SNIPPET_LIMIT = 200
_MAX_LINES = 5000

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
# the first character of every line the patterns above can match (On, Le, Am, From, De, Von, *, -)
_FIRST_CHARACTERS = frozenset("OoLlAaFfDdVv*-")


def _starts_quoted_history(lines: Sequence[str], index: int) -> bool:
    line = lines[index].strip()
    if line[:1] not in _FIRST_CHARACTERS:
        return False  # no pattern below can match: most lines end here
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
    length = 0
    for index, line in enumerate(lines[:_MAX_LINES]):
        if line.rstrip() == "--" or _starts_quoted_history(lines, index):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
            length += len(line)
            # what follows cannot change the first `limit` characters: stop reading (most of the cost of
            # a long message's snippet was testing every line of it for reply history)
            if length > 2 * limit and len(" ".join(" ".join(kept).split())) > limit:
                break
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
