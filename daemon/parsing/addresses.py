"""Address headers to `Address` values: lists split, groups flattened, names decoded, duplicates dropped.

The stdlib address parser walks a header one character at a time in Python; nearly every real header is a
list of `addr`, `Name <addr>` or `"Quoted, Name" <addr>`, which a regular expression reads exactly as
getaddresses would, so getaddresses is the fallback for the rest. A value with nothing readable as an
address list keeps whatever looks like an address.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from email.utils import getaddresses

from daemon.parsing.encoded_words import EncodedWordStash, header_text
from daemon.parsing.text import one_line, scrub
from models.messages import Address

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SIMPLE_MAILBOX_RE = re.compile(
    r"""\s*(?:
        (?:"((?:[^"\\]|\\.)*)"|([^",<>()\[\]:;@\\]*?))\s*<([^<>\s@",()\[\]:;\\]+@[^<>\s@",()\[\]:;\\]+)>
        |([^<>\s@",()\[\]:;\\]+@[^<>\s@",()\[\]:;\\]+)
    )\s*(?:,\s*|$)""",
    re.VERBOSE,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_LOOSE_ADDRESS_RE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")

# Python 3.11.10+ getaddresses() returns nothing for input it used to read best-effort; ask for the
# old behaviour where it exists, since a recipient we can read beats a recipient we drop.
_GETADDRESSES_KWARGS: dict[str, bool] = (
    {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}
)


def normalize_address(value: str) -> str | None:
    """Lower case, without spaces, controls or enclosing brackets and quotes; None without local@domain."""
    email = "".join(_CONTROL_RE.sub(" ", scrub(value)).split()).strip("<>\"'").lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return None
    return email


def split_address_list(text: str) -> list[tuple[str, str]]:
    """(display name, addr-spec) pairs; plain lists are read by regex, anything else by getaddresses."""
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


def parse_addresses(values: Sequence[str], charset_hint: str | None) -> tuple[Address, ...]:
    """Mailboxes of every occurrence of an address header; groups flattened, entries without '@' dropped."""
    found: list[Address] = []
    seen: set[str] = set()
    for value in values:
        stash = EncodedWordStash()
        text = stash.hide(header_text(value, charset_hint))
        before = len(found)
        for name, address in split_address_list(text):
            email = normalize_address(stash.restore(address))
            if email is None or email in seen:
                continue
            seen.add(email)
            display = one_line(stash.restore(name)).strip("\"' ")
            found.append(Address(name="" if display.lower() == email else display, email=email))
        if len(found) == before and "@" in text:
            # Nothing readable as an address list: keep whatever looks like an address.
            for loose in _LOOSE_ADDRESS_RE.findall(stash.restore(text)):
                email = normalize_address(loose)
                if email is not None and email not in seen:
                    seen.add(email)
                    found.append(Address(name="", email=email))
    return tuple(found)
