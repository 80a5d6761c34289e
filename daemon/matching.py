"""Who an email concerns and whether it may be logged: the pure half of matching.

Given a message's parsed headers and the team's rules (internal domains and addresses, `[matching]` settings,
the free-mail list), `match_message` decides the direction, the normalized participants, which of them are
external, which external addresses may become contacts, and why a message is skipped outright (internal
only, every outside address ignored). `MatchDecision.plan(known)` then finishes the decision against the set
of addresses that already belong to contacts (a bulk lookup the sync does once per batch).

No database, no IMAP: the sync calls this on headers alone, before deciding whether a body is worth fetching.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from models.contacts import normalize_domain, normalize_email

Direction = Literal["in", "out"]

CREATE_NONE, CREATE_SENT, CREATE_SENT_AND_RECEIVED = "none", "sent", "sent_and_received"

SKIP_INTERNAL = "internal only"
SKIP_NO_PARTICIPANTS = "no participants"
SKIP_IGNORED = "ignored"
SKIP_AUTOMATED = "automated"
SKIP_NO_CONTACT = "no contact"

# Senders that are machines whatever the other headers say (RFC 2142 role names and the usual no-reply forms).
_AUTOMATED_LOCAL_PARTS = frozenset(
    {"mailer-daemon", "postmaster", "noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "bounce",
     "bounces"}
)  # fmt: skip


class AddressLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def email(self) -> str: ...


class HeadersLike(Protocol):
    """What matching reads from a message (daemon.parse.MessageHeaders has these)."""

    @property
    def from_(self) -> Sequence[AddressLike]: ...

    @property
    def sender(self) -> Sequence[AddressLike]: ...

    @property
    def reply_to(self) -> Sequence[AddressLike]: ...

    @property
    def to(self) -> Sequence[AddressLike]: ...

    @property
    def cc(self) -> Sequence[AddressLike]: ...

    @property
    def bcc(self) -> Sequence[AddressLike]: ...

    @property
    def is_automated(self) -> bool: ...

    @property
    def automated_reason(self) -> str | None: ...


@dataclass(frozen=True)
class MatchRules:
    """The team's matching rules, built once per sync run from settings and the users table."""

    internal_domains: frozenset[str] = frozenset()
    internal_addresses: frozenset[str] = frozenset()
    create_contacts: str = CREATE_SENT
    ignore: tuple[str, ...] = ()
    freemail: frozenset[str] = frozenset()
    # free-mail entries may be globs ('yahoo.*'); exact names are checked with a set lookup first
    _freemail_globs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        globs = tuple(d for d in self.freemail if any(c in d for c in "*?["))
        object.__setattr__(self, "_freemail_globs", globs)

    def is_internal(self, address: str) -> bool:
        if address in self.internal_addresses:
            return True
        domain = address.rpartition("@")[2]
        # subdomains of a team domain (eu.team.example) are the team too
        return any(domain == d or domain.endswith("." + d) for d in self.internal_domains)

    def is_ignored(self, address: str) -> bool:
        """`[matching] ignore`: a glob with '@' matches the whole address, one without matches the domain."""
        domain = address.rpartition("@")[2]
        for pattern in self.ignore:
            subject = address if "@" in pattern else domain
            if fnmatch.fnmatchcase(subject, pattern):
                return True
        return False

    def is_freemail(self, domain: str) -> bool:
        domain = domain.lower()
        return domain in self.freemail or any(fnmatch.fnmatchcase(domain, g) for g in self._freemail_globs)


def build_rules(
    *,
    team_domains: Iterable[str],
    internal_addresses: Iterable[str],
    create_contacts: str,
    ignore: Iterable[str],
    freemail: Iterable[str],
) -> MatchRules:
    addresses = frozenset(a for a in (normalize_email(x) for x in internal_addresses) if a)
    return MatchRules(
        internal_domains=frozenset(normalize_domain(d) for d in team_domains if d.strip()),
        internal_addresses=addresses,
        create_contacts=create_contacts,
        ignore=tuple(p.strip().lower() for p in ignore if p.strip()),
        freemail=frozenset(d.strip().lower() for d in freemail if d.strip()),
    )


@dataclass(frozen=True)
class Participant:
    email: str
    name: str  # display name from the header, '' when there was none
    roles: tuple[str, ...]  # 'from', 'sender', 'reply_to', 'to', 'cc', 'bcc' in header order
    internal: bool
    ignored: bool

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class MatchPlan:
    """The decision finished against known contacts: whom to link, whom to create, or why to skip."""

    link: tuple[Participant, ...]  # external participants that already are contacts
    create: tuple[Participant, ...]  # external participants to create as contacts
    skip_reason: str | None

    @property
    def logs(self) -> bool:
        return self.skip_reason is None


@dataclass(frozen=True)
class MatchDecision:
    direction: Direction
    sender: str | None  # the address the direction was decided on (From, else Sender)
    participants: tuple[Participant, ...]
    external: tuple[Participant, ...]  # outside the team and not ignored: the only ones ever linked
    creatable: tuple[Participant, ...]  # external participants the rules allow to become contacts
    automated: bool
    automated_reason: str | None
    skip_reason: str | None  # set when no lookup can make the message loggable

    def plan(self, known: Collection[str]) -> MatchPlan:
        """Link external participants that are contacts, create the allowed unknown ones; log if any."""
        if self.skip_reason is not None:
            return MatchPlan((), (), self.skip_reason)
        link = tuple(p for p in self.external if p.email in known)
        create = tuple(p for p in self.creatable if p.email not in known)
        if link or create:
            return MatchPlan(link, create, None)
        return MatchPlan((), (), SKIP_AUTOMATED if self.automated else SKIP_NO_CONTACT)


_ROLES: tuple[tuple[str, str], ...] = (
    ("from", "from_"),
    ("sender", "sender"),
    ("reply_to", "reply_to"),
    ("to", "to"),
    ("cc", "cc"),
    ("bcc", "bcc"),
)


def match_message(headers: HeadersLike, rules: MatchRules) -> MatchDecision:
    """Decide direction, participants and what may be created from a message's headers alone."""
    sender = _first_address(headers.from_) or _first_address(headers.sender)
    direction: Direction = "out" if sender is not None and rules.is_internal(sender) else "in"
    automated_reason = headers.automated_reason if headers.is_automated else None
    if automated_reason is None and sender is not None and _looks_automated(sender):
        automated_reason = f"sender {sender}"
    automated = automated_reason is not None or headers.is_automated

    found: dict[str, tuple[str, list[str]]] = {}
    for role, attribute in _ROLES:
        if role == "bcc" and direction != "out":
            # an inbound Bcc header only tells who the sender blind-copied: not this conversation's people
            continue
        for address in getattr(headers, attribute) or ():
            email = normalize_email(address.email or "")
            if email is None:
                continue
            name, roles = found.setdefault(email, (_clean_name(address.name, email), []))
            if role not in roles:
                roles.append(role)
            if not name:
                found[email] = (_clean_name(address.name, email), roles)
    participants = tuple(
        Participant(email, name, tuple(roles), rules.is_internal(email), rules.is_ignored(email))
        for email, (name, roles) in found.items()
    )
    outside = [p for p in participants if not p.internal]
    external = tuple(p for p in outside if not p.ignored)

    skip_reason: str | None = None
    if not participants:
        skip_reason = SKIP_NO_PARTICIPANTS
    elif not outside:
        skip_reason = SKIP_INTERNAL
    elif not external:
        skip_reason = SKIP_IGNORED

    creatable: tuple[Participant, ...] = ()
    if skip_reason is None and not automated:
        creatable = tuple(p for p in external if _may_create(p, direction, rules.create_contacts))
    return MatchDecision(
        direction=direction,
        sender=sender,
        participants=participants,
        external=external,
        creatable=creatable,
        automated=automated,
        automated_reason=automated_reason or ("automated" if automated else None),
        skip_reason=skip_reason,
    )


def _may_create(participant: Participant, direction: Direction, policy: str) -> bool:
    if policy == CREATE_NONE:
        return False
    if direction == "out":
        # people the team wrote to
        return any(role in ("to", "cc", "bcc") for role in participant.roles)
    if policy == CREATE_SENT_AND_RECEIVED:
        return "from" in participant.roles or participant.roles == ("sender",)
    return False


def _first_address(addresses: Sequence[AddressLike] | None) -> str | None:
    for address in addresses or ():
        email = normalize_email(address.email or "")
        if email is not None:
            return email
    return None


def _looks_automated(address: str) -> bool:
    local = address.partition("@")[0].split("+", 1)[0]
    return local in _AUTOMATED_LOCAL_PARTS


def _clean_name(name: str | None, email: str) -> str:
    """A display name worth keeping: not empty, not the address again, no quotes or line breaks."""
    if not name:
        return ""
    cleaned = " ".join(name.replace("\x00", "").split()).strip().strip("'\"").strip()
    if not cleaned or cleaned.lower() == email or ("@" in cleaned and normalize_email(cleaned) == email):
        return ""
    return cleaned[:300]
