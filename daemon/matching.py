"""Who an email concerns and whether it is logged: matching's rules, decided once per message.

This module owns the matching rules: who is the team (its domains, its mailboxes' and users' addresses),
what mail is automated (list headers, Precedence, Auto-Submitted, and the one list of machine sender names
below), which domains are free-mail (daemon/freemail.txt plus `[matching] freemail_domains`), which outside
addresses may become contacts (`[matching] create_contacts`), and when mail is bulk (more recipients than
`[matching] max_recipients`, or a header block cut at `max_header_bytes`). Parsing only reports the facts
these rules read.

It decides in two steps, because the sync decides from headers alone, for a whole batch at once, before it
fetches any body: `read_participants` judges a message's headers by the rules (no database): direction, the
outside participants worth looking up, who may be created, or a skip reason that no lookup can change. The
sync then looks up the batch's outside addresses once, and `decide` turns each message's participants and
that lookup into the final `Placement` (whom to link, whom to create) or `SkipReason`. Recording carries the
placement out as it is.

Sub-addresses (RFC 5233, `pat+news@acme.example`) are the person of the base address: they link the contact
of `pat@acme.example` when there is one, and a contact made for one gets the base address, so a person never
becomes two contacts through tags.

Mail that no contact makes loggable gets a second look, with two more lookups the sync makes only for such
mail (`Participants.second_look`): with `create_contacts = "sent"`, a person writing from a domain a company
owns becomes a contact of that company (the team knows the company: its people's mail belongs on it); and
a reply into a thread already filed on a deal (In-Reply-To or References naming a logged message) from an
address nobody knows is filed on that thread's deal and company with no contact linked, so that the deal
page can offer the address to the contact who was written to.

A delivery failure report (a DSN: `multipart/report; report-type=delivery-status`) sent to the team is
decided in two steps too: `decide` marks it a bounce to read, and once its body is parsed `place_bounce`
files it on the contacts whose address failed (sub-addresses resolved), or skips it when none is a contact.
It never makes a contact: not of the mail system that sent it, not of the failed address.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.contacts import base_address, normalize_email
from models.domains import company_domain_of, lookup_domains, normalize_domain
from models.messages import Address, Direction, MessageHeaders, NewContact, Placement, SkipReason
from settings import MailboxSettings, MatchingSettings, TeamSettings

FREEMAIL_FILE = Path(__file__).with_name("freemail.txt")

# Senders that are machines whatever the other headers say: RFC 2142 role names and the usual no-reply
# forms, compared with '-', '_' and '.' removed ("no_reply", "do-not-reply", "MAILER-DAEMON").
_AUTOMATED_LOCAL_PARTS = frozenset(
    {"noreply", "donotreply", "mailerdaemon", "postmaster", "bounce", "bounces"}
)
_AUTOMATED_LOCAL_PREFIX_RE = re.compile(r"(?:no-?reply|do-?not-?reply|bounces?)(?:[-_.]|$)")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_GLOB_CHARACTERS = frozenset("*?[")


class CreateContacts(enum.StrEnum):
    """`[matching] create_contacts`: which unknown outside addresses become contacts."""

    NONE = "none"  # nobody: only mail with existing contacts is logged
    SENT = "sent"  # people the team wrote to (To, Cc, Bcc of outbound mail)
    SENT_AND_RECEIVED = "sent_and_received"  # also the senders of inbound mail


class Role(enum.StrEnum):
    FROM = "from"
    SENDER = "sender"
    REPLY_TO = "reply_to"
    TO = "to"
    CC = "cc"
    BCC = "bcc"


_RECIPIENT_ROLES = frozenset({Role.TO, Role.CC, Role.BCC})


@dataclass(frozen=True)
class Team:
    """Who the team is, as the configuration says: its domains and every mailbox's own addresses. (Users'
    addresses come from the database when the rules are built.)"""

    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    @classmethod
    def of(cls, team: TeamSettings, mailboxes: Iterable[MailboxSettings]) -> Team:
        addresses = [
            a for m in mailboxes for a in (m.address, m.owner, m.username) if a is not None and "@" in a
        ]
        return cls(domains=team.domains, addresses=tuple(addresses))


@dataclass(frozen=True)
class MatchRules:
    """The team's matching rules, built once per sync run (`build_rules`)."""

    internal_domains: frozenset[str] = frozenset()
    internal_addresses: frozenset[str] = frozenset()
    create_contacts: CreateContacts = CreateContacts.SENT
    ignore: tuple[str, ...] = ()
    freemail: frozenset[str] = frozenset()
    max_recipients: int = MatchingSettings.max_recipients
    # free-mail entries may be globs ('yahoo.*'); exact names are checked with a set lookup first
    _freemail_globs: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        globs = tuple(d for d in self.freemail if not _GLOB_CHARACTERS.isdisjoint(d))
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
        """Whether an address domain belongs to a free-mail provider: a person's address, no company's."""
        domain = normalize_domain(domain)
        if not domain:
            return False
        return domain in self.freemail or any(fnmatch.fnmatchcase(domain, g) for g in self._freemail_globs)


def load_freemail_domains(extra: Iterable[str] = ()) -> frozenset[str]:
    """Domains and globs from daemon/freemail.txt plus `extra` (a deployment's own additions)."""
    lines = FREEMAIL_FILE.read_text(encoding="utf-8").splitlines()
    entries = (normalize_domain(entry.split("#", 1)[0]) for entry in (*lines, *extra))
    return frozenset(entry for entry in entries if entry)


def build_rules(matching: MatchingSettings, team: Team, users: Iterable[str] = ()) -> MatchRules:
    """The rules from the `[matching]` settings, the team and the users' addresses (all of them internal)."""
    addresses = frozenset(a for a in (normalize_email(x) for x in (*team.addresses, *users)) if a)
    return MatchRules(
        internal_domains=frozenset(normalize_domain(d) for d in team.domains if d.strip()),
        internal_addresses=addresses,
        create_contacts=CreateContacts(matching.create_contacts),
        ignore=tuple(p.strip().lower() for p in matching.ignore if p.strip()),
        freemail=load_freemail_domains(matching.freemail_domains),
        max_recipients=matching.max_recipients,
    )


@dataclass(frozen=True)
class Participant:
    email: str
    name: str  # display name from the header, '' when there was none
    roles: tuple[Role, ...]  # in header order
    internal: bool
    ignored: bool
    company_domain: str | None = (
        None  # for those who may be created: the registrable domain, None if free-mail
    )


@dataclass(frozen=True)
class Participants:
    """A message's headers judged by the rules, before any lookup: who to look up, who may be created, or
    why nothing can make the message loggable."""

    direction: Direction
    sender: str | None  # the address the direction was decided on (From, else Sender)
    external: tuple[Participant, ...]  # outside the team, not ignored, within max_recipients
    creatable: tuple[Participant, ...]  # external participants the rules allow to become contacts
    automated: str | None  # why the mail is automated, None for a person's mail
    bulk: bool  # more recipients than max_recipients (or headers cut): links existing contacts only
    skip: SkipReason | None  # set when no lookup can make the message loggable
    # inbound senders who become contacts when a company owns their domain (create_contacts = "sent")
    company_senders: tuple[Participant, ...] = ()
    thread: tuple[str, ...] = ()  # Message-IDs this message replies to (In-Reply-To, References)
    bounce: bool = False  # a delivery failure report sent to the team

    @property
    def company_lookup(self) -> tuple[str, ...]:
        """The domains whose companies the company rule needs, most specific first per sender."""
        return tuple(
            dict.fromkeys(
                d
                for p in self.company_senders
                if p.company_domain
                for d in lookup_domains(p.email.rpartition("@")[2], p.company_domain)
            )
        )

    @property
    def lookup(self) -> tuple[str, ...]:
        """The addresses whose contacts the decision needs (with the base address of a sub-address)."""
        if self.skip is not None:
            return ()
        return tuple(dict.fromkeys(a for p in self.external for a in (p.email, base_address(p.email))))


def read_participants(headers: MessageHeaders, rules: MatchRules) -> Participants:
    """Direction, participants and what may be created, from a message's headers alone."""
    sender = _first_address(headers.from_) or _first_address(headers.sender)
    direction = Direction.OUT if sender is not None and rules.is_internal(sender) else Direction.IN
    automated = automated_reason(headers)

    bcc = headers.bcc if direction == Direction.OUT else ()
    bulk = len(headers.to) + len(headers.cc) + len(bcc) > rules.max_recipients or headers.truncated
    found: dict[str, tuple[str, list[Role]]] = {}
    considered = 0
    for role, addresses in (
        (Role.FROM, headers.from_),
        (Role.SENDER, headers.sender),
        (Role.REPLY_TO, headers.reply_to),
        (Role.TO, headers.to),
        (Role.CC, headers.cc),
        # an inbound Bcc header only tells who the sender blind-copied: not this conversation's people
        (Role.BCC, bcc),
    ):
        for address in addresses:
            if role in _RECIPIENT_ROLES:
                considered += 1
                if considered > rules.max_recipients:
                    break  # bulk mail costs what any other mail costs: the rest is not read
            email = normalize_email(address.email or "")
            if email is None:
                continue
            name, roles = found.setdefault(email, (_clean_name(address.name, email), []))
            if role not in roles:
                roles.append(role)
            if not name:
                found[email] = (_clean_name(address.name, email), roles)
    participants = [
        Participant(email, name, tuple(roles), rules.is_internal(email), rules.is_ignored(email))
        for email, (name, roles) in found.items()
    ]
    outside = [p for p in participants if not p.internal]
    external = tuple(p for p in outside if not p.ignored)

    skip: SkipReason | None = None
    if not participants:
        skip = SkipReason.NO_PARTICIPANTS
    elif not outside:
        skip = SkipReason.INTERNAL
    elif not external:
        skip = SkipReason.IGNORED

    creatable: tuple[Participant, ...] = ()
    company_senders: tuple[Participant, ...] = ()
    if skip is None and automated is None and not bulk:
        creatable = tuple(
            _with_company_domain(p, rules)
            for p in external
            if _may_create(p, direction, rules.create_contacts)
        )
        if direction == Direction.IN and rules.create_contacts == CreateContacts.SENT:
            company_senders = tuple(
                c
                for p in external
                if Role.FROM in p.roles and (c := _with_company_domain(p, rules)).company_domain
            )
    thread = tuple(dict.fromkeys(m for m in (*headers.in_reply_to, *headers.references) if m))
    thread = thread if skip is None else ()
    if headers.delivery_report and automated is not None:
        # a mail system's report (often the team's own server, so "internal"): about the failed recipients
        return Participants(Direction.IN, sender, (), (), automated, False, None, bounce=True)
    return Participants(
        direction, sender, external, creatable, automated, bulk, skip, company_senders, thread
    )  # fmt: skip


def second_look(
    participants: Participants, companies: Collection[str], threads: Collection[str]
) -> Placement | None:
    """For a message `decide` found no contact for: the contacts to make because a company owns their
    domain (`companies`: the company domains among `company_lookup`), else, for a reply into a thread filed
    on a deal (`threads`: the Message-IDs of `thread` that are logged on a deal), a placement on that
    thread's deal with no contact; None when neither applies."""
    p = participants
    create = {
        base: NewContact(base, x.name, x.company_domain)
        for x in p.company_senders
        if x.company_domain
        and not set(lookup_domains(x.email.rpartition("@")[2], x.company_domain)).isdisjoint(companies)
        and (base := base_address(x.email))
    }
    if create:
        return Placement(p.direction, (), tuple(create.values()))
    if p.direction == Direction.IN and any(m in threads for m in p.thread):
        return Placement(p.direction, (), thread_only=True)
    return None


def decide(
    participants: Participants, known: Collection[str], making: Collection[str] = ()
) -> Placement | SkipReason:
    """The final decision against the addresses that are contacts (`known`) and those that earlier messages
    of the run are to make contacts of (`making`): link those, create the allowed unknown ones, or say why the
    message is not logged. An address being made is created by this message too where it may be (so the
    message does not depend on the earlier one going through), and otherwise linked."""
    p = participants
    if p.skip is not None:
        return p.skip
    if p.bounce:
        return Placement(p.direction, (), bounce=True)  # whose address failed: read from the body
    creatable = {base_address(x.email) for x in p.creatable}
    linked: dict[str, None] = {}
    for x in p.external:
        email = _known_as(x.email, known) or _known_as(x.email, making)
        if email is not None and (email in known or email not in creatable):
            linked[email] = None
    link = tuple(linked)
    create = tuple(
        {
            base: NewContact(base, x.name, x.company_domain)
            for x in p.creatable
            if (base := base_address(x.email)) not in known and _known_as(x.email, known) is None
        }.values()
    )
    if link or create:
        author = p.sender if p.direction == Direction.OUT else None
        return Placement(p.direction, link, create, author_email=author, bulk=p.bulk)
    if p.automated is not None:
        return SkipReason.AUTOMATED
    return SkipReason.BULK if p.bulk else SkipReason.NO_CONTACT


def bounce_lookup(failed: Sequence[str]) -> tuple[str, ...]:
    """The addresses whose contacts `place_bounce` needs for these failed recipients."""
    return tuple(dict.fromkeys(a for f in failed if (e := normalize_email(f)) for a in (e, base_address(e))))


def place_bounce(
    placement: Placement, failed: Sequence[str], known: Collection[str]
) -> Placement | SkipReason:
    """A bounce, once its body told whose delivery failed: filed on those that are contacts."""
    link = {k: None for f in failed if (e := normalize_email(f)) and (k := _known_as(e, known))}
    if not link:
        return SkipReason.NO_CONTACT
    return Placement(placement.direction, tuple(link), bounce=True)


def _known_as(email: str, known: Collection[str]) -> str | None:
    """The address a participant is known by: itself, else its base address (a sub-address), else None."""
    if email in known:
        return email
    base = base_address(email)
    return base if base != email and base in known else None


def automated_reason(headers: MessageHeaders) -> str | None:
    """Why a message was sent by a machine rather than a person, or None."""
    if headers.list_id:
        return "List-Id header"
    if headers.list_unsubscribe:
        return "List-Unsubscribe header"
    if headers.precedence in _BULK_PRECEDENCE:
        return f"Precedence: {headers.precedence}"
    if headers.auto_submitted and headers.auto_submitted != "no":
        return f"Auto-Submitted: {headers.auto_submitted}"
    for label, addresses in (("From", headers.from_), ("Sender", headers.sender)):
        for address in addresses:
            if is_automated_sender(address.email):
                return f"{label} address {address.email}"
    return None


def is_automated_sender(address: str) -> bool:
    """no-reply@, mailer-daemon@, bounces+123@ and their kind."""
    token = address.rpartition("@")[0].split("+", 1)[0].lower()
    return re.sub(r"[-_.]", "", token) in _AUTOMATED_LOCAL_PARTS or bool(
        _AUTOMATED_LOCAL_PREFIX_RE.match(token)
    )


def _may_create(participant: Participant, direction: Direction, policy: CreateContacts) -> bool:
    if policy == CreateContacts.NONE:
        return False
    if direction == Direction.OUT:
        # people the team wrote to
        return not _RECIPIENT_ROLES.isdisjoint(participant.roles)
    if policy == CreateContacts.SENT_AND_RECEIVED:
        return Role.FROM in participant.roles or participant.roles == (Role.SENDER,)
    return False


def _with_company_domain(participant: Participant, rules: MatchRules) -> Participant:
    domain = participant.email.rpartition("@")[2]
    company = None if rules.is_freemail(domain) else company_domain_of(domain)
    return Participant(
        participant.email, participant.name, participant.roles, participant.internal, participant.ignored,
        company,
    )  # fmt: skip


def _first_address(addresses: Sequence[Address]) -> str | None:
    for address in addresses:
        email = normalize_email(address.email or "")
        if email is not None:
            return email
    return None


def _clean_name(name: str | None, email: str) -> str:
    """A display name worth keeping: not empty, not the address again, no quotes or line breaks."""
    if not name:
        return ""
    cleaned = " ".join(name.replace("\x00", "").split()).strip().strip("'\"").strip()
    if not cleaned or cleaned.lower() == email or ("@" in cleaned and normalize_email(cleaned) == email):
        return ""
    return cleaned[:300]
