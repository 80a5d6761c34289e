"""Realistic team-inbox mail, generated: the raw messages benchmarks load into Dovecot and tests can reuse.

`generate_mailbox(n, team_domain=..., seed=...)` returns n raw RFC 5322 messages for one rep's inbox (with
the folder each belongs in: INBOX, or Sent for what the rep wrote) plus the `known_contacts` a CRM would
already hold, so a benchmark can create them first. `generate_messages` is the same without the extras.
Everything is deterministic in (seed, message index): message i is the same whether it is generated alone
or among 100,000, so big mailboxes can be generated and loaded in chunks (`start=`).

The mix is what a sales rep's mailbox looks like, by share of messages:

- 15 % client mail, which a CRM logs: 8 % inbound from known contacts (often replies, with In-Reply-To and
  References, sometimes a colleague or a second contact in Cc), 7 % written by the rep (folder Sent), to a
  known contact or, one time in three, to someone new at a client or prospect domain (which becomes a
  contact with `create_contacts = "sent"`).
- 25 % internal only: colleagues at the team's domain writing to each other (a third of it in Sent).
- 35 % newsletters and automated mail: marketing lists (List-Id, List-Unsubscribe, Precedence: bulk,
  HTML-heavy with tracking pixels), SaaS notifications (no-reply senders, Auto-Submitted) and receipts
  (no-reply, PDF invoice attached). Never logged: no known contact takes part.
- 25 % unknown outside senders: cold pitches, recruiters, vendors, people at free-mail domains. Not logged
  with `create_contacts = "sent"` (they are logged with "sent_and_received").

Sizes: a log-normal spread with a median near 11 KB and a mean near 15 KB, clamped to 1-60 KB. Inbound
mail carries a Received chain of 2-4 hops, Authentication-Results and a DKIM-Signature; about 60 % of
person-to-person mail and nearly all newsletters have an HTML alternative; about one message in seven
carries an attachment (PDF- or PNG-like random bytes, base64). Bodies are quoted-printable, base64 or
7bit; a few names and subjects are non-ASCII (RFC 2047). One message in a hundred has no Message-ID.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# Messages are dated from here on, about five minutes apart, so UID order is roughly date order.
EPOCH = datetime(2024, 1, 8, 8, 0, tzinfo=UTC)
SECONDS_PER_MESSAGE = 300

MIN_SIZE = 1_000
MAX_SIZE = 60_000
MEDIAN_SIZE = 11_000
SIZE_SIGMA = 0.75

# (kind, share in percent); the module docstring explains each.
MIX: tuple[tuple[str, int], ...] = (
    ("client_in", 8),
    ("client_out", 7),
    ("internal", 25),
    ("automated", 35),
    ("unknown", 25),
)
LOGGED_KINDS = frozenset({"client_in", "client_out"})
# Every message client mail a CRM logs (inbound from known contacts, outbound by the rep), in the same
# proportion as in MIX: the "all logged" mailbox of bench/ingest.py.
ALL_LOGGED: tuple[tuple[str, int], ...] = (("client_in", 8), ("client_out", 7))
KNOWN_CONTACT_COUNT = 160
CLIENT_COMPANY_COUNT = 40

_FIRST = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Lucas", "Mia", "Mateo", "Amelia", "Levi",
    "Harper", "Ethan", "Evelyn", "James", "Aria", "Benjamin", "Chloe", "Henry", "Priya", "Wei", "Fatima",
    "Hiroshi", "Ingrid", "Kwame", "Lucía", "Zoë", "José", "Björn", "Anaïs", "Dmitri", "Sanjay", "Aisha",
)  # fmt: skip
_LAST = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Nguyen", "Patel", "Kim", "Müller", "Schmidt", "Rossi", "Dubois", "Kowalski", "O'Brien", "Okafor",
    "Tanaka", "Larsen", "Novak", "Silva", "Haddad", "Cohen", "Ivanova", "Fischer", "Andersen", "Moreau",
)  # fmt: skip
_COMPANY_WORDS = (
    "north", "blue", "river", "summit", "bright", "iron", "cedar", "harbor", "apex", "vertex", "lumen",
    "pioneer", "granite", "silver", "maple", "orbit", "quantum", "atlas", "beacon", "cobalt", "delta",
    "ember", "falcon", "gamma", "helix", "indigo", "juniper", "kepler", "lattice", "meridian",
)  # fmt: skip
_COMPANY_SUFFIXES = (
    ("logistics", ".com"), ("labs", ".io"), ("systems", ".com"), ("health", ".com"), ("foods", ".co.uk"),
    ("analytics", ".io"), ("retail", ".com"), ("energy", ".de"), ("partners", ".com"), ("software", ".com"),
)  # fmt: skip
_FREEMAIL = ("gmail.com", "outlook.com", "yahoo.com", "hotmail.co.uk", "gmx.de", "icloud.com")
_TEAM = (
    ("Sam Rivera", "sam"), ("Jordan Lee", "jordan"), ("Casey Ortiz", "casey"), ("Morgan Blake", "morgan"),
    ("Riley Chen", "riley"), ("Taylor Brooks", "taylor"), ("Jamie Novak", "jamie"), ("Avery Stone", "avery"),
    ("Quinn Harper", "quinn"), ("Drew Patel", "drew"), ("Sasha Ivanova", "sasha"), ("Robin Meyer", "robin"),
)  # fmt: skip
_WORDS = (
    "the", "the", "the", "and", "and", "to", "to", "of", "a", "a", "in", "for", "on", "with", "we", "you",
    "your", "our", "is", "are", "this", "that", "will", "can", "be", "it", "as", "at", "by", "from", "next",
    "week", "proposal", "pricing", "contract", "renewal", "meeting", "call", "team", "quarter", "budget",
    "timeline", "rollout", "pilot", "onboarding", "integration", "license", "seats", "discount", "invoice",
    "update", "feedback", "question", "questions", "thanks", "please", "let", "know", "if", "have", "any",
    "schedule", "Tuesday", "Thursday", "review", "draft", "attached", "version", "legal", "procurement",
    "security", "questionnaire", "scope", "phase", "deliverables", "support", "account", "manager", "plan",
    "annual", "monthly", "users", "data", "migration", "report", "dashboard", "forecast", "pipeline",
    "approval", "sign", "off", "before", "after", "end", "month", "happy", "discuss", "details", "options",
    "agenda", "notes", "follow", "up", "regarding", "customer", "product", "feature", "request", "demo",
)  # fmt: skip
_CLIENT_SUBJECTS = (
    "Proposal for {company}", "Pricing question", "Contract renewal {year}", "Next steps after our call",
    "Security questionnaire", "Pilot rollout plan", "Invoice {number}", "Onboarding schedule",
    "Updated quote for {company}", "Meeting notes {month}", "Re: Seats for the {team} team",
    "Quick question about the integration", "Signed order form", "Budget approval for Q{quarter}",
)  # fmt: skip
_INTERNAL_SUBJECTS = (
    "Team sync notes", "Pipeline review {month}", "Can you cover my demo on Thursday?",
    "Forecast for Q{quarter}", "Lunch?", "Commission report {month}", "Offsite agenda",
    "Deal desk: discount approval", "Holiday rota",
    "New pricing sheet", "Standup moved to 10:00", "Territory changes",
)  # fmt: skip
_UNKNOWN_SUBJECTS = (
    "Quick intro", "Partnership opportunity", "Are you the right person?", "Helping {company} grow 3x",
    "Following up on my last email", "Opportunity at a fast-growing startup", "Speaker invitation",
    "Would love 15 minutes of your time", "Your website", "Question about your product",
)  # fmt: skip
_UNKNOWN_DOMAINS = (
    "growthleads.io", "outboundpro.com", "talentbridge.co", "seo-wizards.net", "eventhorizon-summits.com",
    "cloudvendor.io", "leadgenius.ai", "hiringhub.com",
)  # fmt: skip
_NEWSLETTERS = (
    ("SaaS Weekly", "news", "saasweekly.com"),
    ("Product Hunt Daily", "hello", "digest.producthunt-like.com"),
    ("Sales Hacker", "newsletter", "saleshacker-like.com"),
    ("The Morning Brief", "brief", "morningbrief.news"),
    ("Cloud Status", "updates", "status.cloudhost.io"),
    ("Webinar Team", "events", "webinars.martech.io"),
)  # fmt: skip
_NOTIFIERS = (
    ("Calendar", "calendar-notification", "calendar.workspace-like.com", "Invitation: {subject} @ {when}"),
    ("DocuSign-like", "dse", "docs.esign-like.net", "Completed: please review the signed document"),
    ("Jira", "jira", "acme-team.atlassian-like.net", "[JIRA] (SALES-{number}) Update the deck"),
    ("Billing", "no-reply", "billing.cloudhost.io", "Your receipt #{number}"),
    ("Expenses", "noreply", "expenses.app", "Expense report {number} approved"),
)  # fmt: skip
_MAILERS = (
    "Microsoft Outlook 16.0", "Apple Mail (2.3731.700.6)", "Mozilla Thunderbird 115.8.0",
    "Superhuman", None, None,
)  # fmt: skip
_RELAYS = (
    ("mail-wr1-f54.google.com", "209.85.221.54"), ("mail-eopbgr80070.outbound.protection.outlook.com",
    "40.107.8.70"), ("a8-30.smtp-out.amazonses.com", "54.240.8.30"), ("o1.ptr4512.sendgrid.net",
    "167.89.12.44"), ("mx-out-02.mailgun.net", "159.135.224.12"),
)  # fmt: skip


@dataclass(frozen=True)
class KnownContact:
    """A contact the CRM already holds before the benchmark's sync (a row of a contacts CSV)."""

    name: str
    email: str
    company: str
    company_domain: str


@dataclass(frozen=True)
class GeneratedMessage:
    raw: bytes
    kind: str  # one of MIX's kinds
    folder: str  # "INBOX" or "Sent"

    @property
    def logged(self) -> bool:
        """Whether a CRM with create_contacts='sent' and the known contacts logs it."""
        return self.kind in LOGGED_KINDS


@dataclass(frozen=True)
class GeneratedMailbox:
    messages: list[GeneratedMessage]
    known_contacts: list[KnownContact]


def generate_messages(n: int, *, team_domain: str, seed: int = 1, start: int = 0) -> list[bytes]:
    """n raw messages (indexes start..start+n-1) for sam@<team_domain>'s mailbox."""
    return [
        message.raw
        for message in generate_mailbox(n, team_domain=team_domain, seed=seed, start=start).messages
    ]


def generate_mailbox(
    n: int, *, team_domain: str, seed: int = 1, start: int = 0, mix: Sequence[tuple[str, int]] = MIX
) -> GeneratedMailbox:
    """n messages with their kind and folder, plus the contacts a CRM already knows (independent of n).
    `mix` gives the kinds of message and their shares (ALL_LOGGED: only mail a CRM logs)."""
    world = _World(team_domain, seed, mix)
    messages = [world.message(index) for index in range(start, start + n)]
    return GeneratedMailbox(messages=messages, known_contacts=list(world.known))


def known_contacts(*, seed: int = 1) -> list[KnownContact]:
    """The contacts the generated mail expects to be known already; the same for every team domain."""
    return list(_World("team.example", seed).known)


def mailbox_owner(team_domain: str) -> str:
    """The address of the rep whose mailbox is generated."""
    return f"{_TEAM[0][1]}@{team_domain}"


# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Person:
    name: str
    email: str

    def header(self) -> str:
        return _address_header(self.name, self.email)


class _World:
    """The cast (team, client companies and their contacts) drawn once from the seed."""

    def __init__(self, team_domain: str, seed: int, mix: Sequence[tuple[str, int]] = MIX) -> None:
        self.team_domain = team_domain.lower()
        self.seed = seed
        self.kinds = [k for k, _ in mix]
        self.weights = [w for _, w in mix]
        rng = random.Random(f"mailgen-world:{seed}")
        self.team = [_Person(name, f"{local}@{self.team_domain}") for name, local in _TEAM]
        self.owner = self.team[0]
        companies: list[tuple[str, str]] = []
        used: set[str] = set()
        while len(companies) < CLIENT_COMPANY_COUNT:
            word = rng.choice(_COMPANY_WORDS)
            suffix, tld = rng.choice(_COMPANY_SUFFIXES)
            domain = f"{word}{suffix}{tld}"
            if domain not in used:
                used.add(domain)
                companies.append((f"{word.title()} {suffix.title()}", domain))
        self.companies = companies
        known: list[KnownContact] = []
        emails: set[str] = set()
        while len(known) < KNOWN_CONTACT_COUNT:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            company, domain = rng.choice(companies)
            if rng.random() < 0.08:  # a few contacts write from private addresses: no company
                company, domain = "", rng.choice(_FREEMAIL)
            email = f"{_ascii_local(first)}.{_ascii_local(last)}@{domain}"
            if email in emails:
                continue
            emails.add(email)
            known.append(KnownContact(f"{first} {last}", email, company, "" if not company else domain))
        self.known = tuple(known)

    # -- one message ------------------------------------------------------------------------------------

    def message(self, index: int) -> GeneratedMessage:
        rng = random.Random(self.seed * 1_000_003 + index)
        kind = rng.choices(self.kinds, weights=self.weights)[0]
        date = EPOCH + timedelta(seconds=index * SECONDS_PER_MESSAGE + rng.randrange(SECONDS_PER_MESSAGE))
        wanted = int(min(MAX_SIZE, max(MIN_SIZE, rng.lognormvariate(math.log(MEDIAN_SIZE), SIZE_SIGMA))))
        build = getattr(self, f"_{kind}")
        state = rng.getstate()
        size = wanted
        for _ in range(6):
            # Encodings and headers make the result miss `size`; aim again from the same random state.
            rng.setstate(state)
            raw, folder = build(rng, index, date, size)
            if MIN_SIZE <= len(raw) <= MAX_SIZE:
                break
            size = max(300, int(size * min(wanted, MAX_SIZE * 0.97) / len(raw)))
        return GeneratedMessage(raw=raw, kind=kind, folder=folder)

    def _client_in(self, rng: random.Random, index: int, date: datetime, size: int) -> tuple[bytes, str]:
        contact = rng.choice(self.known)
        sender = _Person(contact.name, contact.email)
        cc: list[_Person] = []
        if rng.random() < 0.25:
            cc.append(rng.choice(self.team[1:]))
        if rng.random() < 0.15:
            other = rng.choice(self.known)
            cc.append(_Person(other.name, other.email))
        subject = self._subject(rng, _CLIENT_SUBJECTS, contact.company or "your team")
        reply = rng.random() < 0.6
        headers = self._inbound_headers(rng, index, date, sender, [self.owner], cc, subject, reply=reply)
        mailer = rng.choice(_MAILERS)
        if mailer:
            headers.append(("X-Mailer", mailer))
        body = _Body(
            greeting=f"Hi {self.owner.name.split()[0]},",
            signoff=f"Best regards,\n{sender.name}\n{contact.company}\n+1 555 {rng.randrange(1000, 9999)}",
            quoted=reply,
            html_chance=0.6,
            attachment_chance=0.2,
        )
        return _assemble(rng, headers, body, size), "INBOX"

    def _client_out(self, rng: random.Random, index: int, date: datetime, size: int) -> tuple[bytes, str]:
        if rng.random() < 2 / 3:
            contact = rng.choice(self.known)
            to = _Person(contact.name, contact.email)
            company = contact.company
        else:  # someone new at a client or prospect: becomes a contact
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            company, domain = rng.choice(self.companies)
            if rng.random() < 0.3:
                word = rng.choice(_COMPANY_WORDS)
                company, domain = f"{word.title()} Group", f"{word}-group{index % 97}.com"
            to = _Person(f"{first} {last}", f"{_ascii_local(first)}.{_ascii_local(last)}@{domain}")
        cc = [rng.choice(self.team[1:])] if rng.random() < 0.2 else []
        subject = self._subject(rng, _CLIENT_SUBJECTS, company or "your team")
        reply = rng.random() < 0.5
        headers = self._common_headers(rng, index, date, self.owner, [to], cc, subject, reply=reply)
        if rng.random() < 0.1:
            headers.append(("Bcc", self.team[rng.randrange(1, len(self.team))].header()))
        body = _Body(
            greeting=f"Hi {to.name.split()[0]},",
            signoff=f"Best,\n{self.owner.name}\nAccount Executive",
            quoted=reply,
            html_chance=0.6,
            attachment_chance=0.2,
        )
        return _assemble(rng, headers, body, size), "Sent"

    def _internal(self, rng: random.Random, index: int, date: datetime, size: int) -> tuple[bytes, str]:
        outgoing = rng.random() < 1 / 3
        colleagues = rng.sample(self.team[1:], k=rng.randint(1, 3))
        sender = self.owner if outgoing else colleagues[0]
        to = colleagues if outgoing else [self.owner, *colleagues[1:]]
        subject = self._subject(rng, _INTERNAL_SUBJECTS, "")
        reply = rng.random() < 0.4
        if outgoing:
            headers = self._common_headers(rng, index, date, sender, to, [], subject, reply=reply)
        else:
            headers = self._internal_received(rng, date) + self._common_headers(
                rng, index, date, sender, to, [], subject, reply=reply
            )
        body = _Body(
            greeting=f"Hey {to[0].name.split()[0]},",
            signoff=sender.name.split()[0],
            quoted=reply,
            html_chance=0.4,
            attachment_chance=0.15,
        )
        return _assemble(rng, headers, body, size), "Sent" if outgoing else "INBOX"

    def _automated(self, rng: random.Random, index: int, date: datetime, size: int) -> tuple[bytes, str]:
        if rng.random() < 0.55:
            name, local, domain = rng.choice(_NEWSLETTERS)
            sender = _Person(name, f"{local}@{domain}")
            subject = f"{name}: {' '.join(rng.choices(_WORDS, k=rng.randint(4, 8))).capitalize()}"
            headers = self._inbound_headers(rng, index, date, sender, [self.owner], [], subject, reply=False)
            list_id = f"{local}.{domain}"
            headers += [
                ("List-Id", f"{name} <{list_id}>"),
                (
                    "List-Unsubscribe",
                    f"<mailto:unsubscribe-{index:x}@{domain}>, <https://{domain}/u/{index:x}>",
                ),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ("Precedence", "bulk"),
                ("Feedback-ID", f"{rng.randrange(10**6)}:{local}:campaign"),
            ]
            body = _Body(greeting="", signoff=f"You receive this because you subscribed to {name}.",
                         quoted=False, html_chance=0.95, attachment_chance=0.0, newsletter=True)  # fmt: skip
        else:
            name, local, domain, template = rng.choice(_NOTIFIERS)
            sender = _Person(name, f"{local}@{domain}")
            subject = template.format(
                subject=rng.choice(_INTERNAL_SUBJECTS).format(month="May", quarter=2),
                when="Tue 10:00",
                number=rng.randrange(10_000, 99_999),
            )
            headers = self._inbound_headers(rng, index, date, sender, [self.owner], [], subject, reply=False)
            headers.append(("Auto-Submitted", "auto-generated"))
            if rng.random() < 0.5:
                headers.append(("X-Auto-Response-Suppress", "All"))
            body = _Body(greeting="", signoff="This is an automated message, please do not reply.",
                         quoted=False, html_chance=0.8, attachment_chance=0.25)  # fmt: skip
        return _assemble(rng, headers, body, size), "INBOX"

    def _unknown(self, rng: random.Random, index: int, date: datetime, size: int) -> tuple[bytes, str]:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        domain = rng.choice(_UNKNOWN_DOMAINS) if rng.random() < 0.7 else rng.choice(_FREEMAIL)
        sender = _Person(f"{first} {last}", f"{_ascii_local(first)}{rng.choice(['.', '', '_'])}"
                         f"{_ascii_local(last)}@{domain}")  # fmt: skip
        subject = self._subject(rng, _UNKNOWN_SUBJECTS, self.team_domain.split(".")[0].title())
        headers = self._inbound_headers(rng, index, date, sender, [self.owner], [], subject, reply=False)
        body = _Body(
            greeting=f"Hi {self.owner.name.split()[0]},",
            signoff=f"Cheers,\n{sender.name}",
            quoted=False,
            html_chance=0.6,
            attachment_chance=0.08,
        )
        return _assemble(rng, headers, body, size), "INBOX"

    # -- headers ----------------------------------------------------------------------------------------

    def _subject(self, rng: random.Random, templates: Sequence[str], company: str) -> str:
        subject = rng.choice(templates).format(
            company=company,
            year=2024,
            number=rng.randrange(1000, 9999),
            month=rng.choice(("January", "February", "March", "April", "May", "June")),
            team=rng.choice(("sales", "support", "finance")),
            quarter=rng.randint(1, 4),
        )
        if rng.random() < 0.04:
            subject += " – Grüße aus München"  # noqa: RUF001 (a real en dash, on purpose)
        return subject

    def _common_headers(
        self,
        rng: random.Random,
        index: int,
        date: datetime,
        sender: _Person,
        to: Sequence[_Person],
        cc: Sequence[_Person],
        subject: str,
        *,
        reply: bool,
    ) -> list[tuple[str, str]]:
        sender_domain = sender.email.rpartition("@")[2]
        headers: list[tuple[str, str]] = [("Date", format_datetime(date))]
        headers.append(("From", sender.header()))
        headers.append(("To", ", ".join(p.header() for p in to)))
        if cc:
            headers.append(("Cc", ", ".join(p.header() for p in cc)))
        headers.append(("Subject", _encode_header(("Re: " if reply else "") + subject)))
        if rng.random() >= 0.01:  # one in a hundred has none: the sync hashes its content instead
            headers.append(
                ("Message-ID", f"<{index:x}.{self.seed}.{rng.getrandbits(48):012x}@{sender_domain}>")
            )
        if reply:
            root = f"<thread-{rng.getrandbits(32):08x}@{sender_domain}>"
            parent = f"<{rng.getrandbits(64):016x}@mail.{sender_domain}>"
            headers.append(("In-Reply-To", parent))
            headers.append(("References", f"{root}\r\n {parent}"))
            headers.append(("Thread-Topic", _encode_header(subject)))
        headers.append(("MIME-Version", "1.0"))
        return headers

    def _inbound_headers(
        self,
        rng: random.Random,
        index: int,
        date: datetime,
        sender: _Person,
        to: Sequence[_Person],
        cc: Sequence[_Person],
        subject: str,
        *,
        reply: bool,
    ) -> list[tuple[str, str]]:
        domain = sender.email.rpartition("@")[2]
        relay, ip = rng.choice(_RELAYS)
        mx, imap, owner = f"mx1.{self.team_domain}", f"imap.{self.team_domain}", self.owner.email
        hops: list[tuple[str, str]] = [
            ("Return-Path", f"<bounce-{rng.getrandbits(40):x}@{domain}>"),
            ("Delivered-To", owner),
            ("Received", f"from {mx} ({mx} [10.0.0.12])\r\n\tby {imap} with LMTP id {_token(rng, 22)}\r\n"
                         f"\tfor <{owner}>; {format_datetime(date + timedelta(seconds=2))}"),
            ("Received", f"from {relay} ({relay} [{ip}])\r\n\tby {mx} (Postfix) with ESMTPS "
                         f"id {_token(rng, 11)}\r\n\tfor <{owner}>; "
                         f"{format_datetime(date + timedelta(seconds=1))}"),
        ]  # fmt: skip
        for _ in range(rng.randint(0, 2)):
            hops.append(("Received", f"by 2002:a05:{rng.getrandbits(16):x}:{rng.getrandbits(16):x} with SMTP "
                                     f"id {_token(rng, 16)};\r\n\t{format_datetime(date)}"))  # fmt: skip
        selector = f"s{rng.randint(1, 2)}"
        hops.append(
            ("Authentication-Results", f"{mx};\r\n\tdkim=pass header.d={domain} header.s={selector};\r\n"
             f"\tspf=pass smtp.mailfrom={domain};\r\n\tdmarc=pass header.from={domain}")
        )  # fmt: skip
        signature = base64.b64encode(rng.randbytes(256)).decode()
        selector = f"s{rng.randint(1, 2)}"
        hops.append(
            ("DKIM-Signature", f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector};\r\n"
             f"\tt={int(date.timestamp())}; h=from:to:subject:date:message-id:mime-version:content-type;\r\n"
             f"\tbh={base64.b64encode(rng.randbytes(32)).decode()};\r\n"
             "\tb=" + "\r\n\t  ".join(signature[i : i + 70] for i in range(0, len(signature), 70)))
        )  # fmt: skip
        return hops + self._common_headers(rng, index, date, sender, to, cc, subject, reply=reply)

    def _internal_received(self, rng: random.Random, date: datetime) -> list[tuple[str, str]]:
        return [
            ("Delivered-To", self.owner.email),
            ("Received", f"from smtp.{self.team_domain} (smtp.{self.team_domain} [10.0.0.25])\r\n\tby "
                         f"imap.{self.team_domain} with LMTP id {_token(rng, 22)}; {format_datetime(date)}"),
        ]  # fmt: skip


# -- bodies -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Body:
    greeting: str
    signoff: str
    quoted: bool
    html_chance: float
    attachment_chance: float
    newsletter: bool = False


def _assemble(rng: random.Random, headers: list[tuple[str, str]], body: _Body, size: int) -> bytes:
    """Headers plus a MIME body filled with text, HTML and attachments up to about `size` bytes."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    budget = max(300, size - len(head) - 400)
    attachments: list[tuple[str, str, bytes]] = []
    if rng.random() < body.attachment_chance and budget > 4000:
        share = rng.uniform(0.4, 0.75)
        raw_size = int(budget * share / 1.37)  # base64 grows data by a third plus line breaks
        budget -= int(raw_size * 1.37)
        attachments.append(_attachment(rng, raw_size))
    has_html = rng.random() < body.html_chance
    text_budget = budget // 3 if has_html else budget
    text = _text_body(rng, body, text_budget)
    parts = [_text_part(rng, "plain", text)]
    if has_html:
        parts.append(_text_part(rng, "html", _html_body(rng, text, body, budget - text_budget)))
    boundary_alt = f"=_alt_{_token(rng, 16)}"
    content = parts[0] if len(parts) == 1 else _multipart("alternative", boundary_alt, parts)
    if attachments:
        boundary_mixed = f"=_mixed_{_token(rng, 16)}"
        att_parts = [_attachment_part(name, ctype, data) for name, ctype, data in attachments]
        content = _multipart("mixed", boundary_mixed, [content, *att_parts])
    return (head + content).encode("utf-8")


def _multipart(subtype: str, boundary: str, parts: Sequence[str]) -> str:
    inner = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
        f"This is a multi-part message in MIME format.\r\n\r\n{inner}--{boundary}--\r\n"
    )


def _text_part(rng: random.Random, subtype: str, text: str) -> str:
    data = text.encode("utf-8")
    choice = rng.random()
    lf_data = text.replace("\r\n", "\n").encode("utf-8")
    if data.isascii() and choice < 0.3:
        return (
            f"Content-Type: text/{subtype}; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}"
        )
    if choice < 0.8 or subtype == "plain":
        encoded = binascii.b2a_qp(lf_data).decode("ascii").replace("\n", "\r\n")
        qp = "Content-Transfer-Encoding: quoted-printable"
        return f'Content-Type: text/{subtype}; charset="utf-8"\r\n{qp}\r\n\r\n{encoded}'
    encoded = base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}'
    )


def _attachment(rng: random.Random, size: int) -> tuple[str, str, bytes]:
    if rng.random() < 0.65:
        name = rng.choice(("Proposal_v{n}.pdf", "invoice-{n}.pdf", "Order_Form_{n}.pdf", "report-{n}.pdf"))
        return (
            name.format(n=rng.randrange(1, 9999)),
            "application/pdf",
            b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n" + rng.randbytes(size),
        )
    name = rng.choice(("screenshot-{n}.png", "image{n}.png", "chart_{n}.png"))
    return name.format(n=rng.randrange(1, 999)), "image/png", b"\x89PNG\r\n\x1a\n" + rng.randbytes(size)


def _attachment_part(name: str, content_type: str, data: bytes) -> str:
    encoded = base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
    return (
        f'Content-Type: {content_type}; name="{name}"\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
    )


def _text_body(rng: random.Random, body: _Body, budget: int) -> str:
    lines: list[str] = [body.greeting, ""] if body.greeting else []
    own = budget * (0.45 if body.quoted else 1.0)
    lines += _paragraphs(rng, max(80, int(own)))
    lines += ["", *body.signoff.split("\n")]
    if body.quoted:
        lines += ["", f"On {rng.choice(('Mon', 'Tue', 'Wed', 'Thu', 'Fri'))}, someone wrote:"]
        lines += [f"> {line}" if line else ">" for line in _paragraphs(rng, max(80, int(budget - own)))]
    return "\r\n".join(lines) + "\r\n"


def _paragraphs(rng: random.Random, budget: int) -> list[str]:
    """About `budget` characters of wrapped business prose (lines drawn from a pool), in paragraphs."""
    pool = _line_pool()
    count = max(1, budget // 70)
    lines: list[str] = []
    for line in rng.choices(pool, k=count):
        lines.append(line)
        if rng.random() < 0.2:
            lines.append("")
    return lines


@functools.cache
def _line_pool() -> tuple[str, ...]:
    """A fixed pool of ~70-column lines of prose: drawing lines is far cheaper than drawing words."""
    rng = random.Random("mailgen-lines")
    lines: list[str] = []
    sentence_left = rng.randint(8, 20)
    capital = True
    while len(lines) < 2000:
        line: list[str] = []
        width = 0
        while width < 64:
            word = rng.choice(_WORDS)
            if capital:
                word, capital = word.capitalize(), False
            sentence_left -= 1
            if sentence_left == 0:
                word += rng.choice((".", ".", ".", "?", "!"))
                sentence_left, capital = rng.randint(8, 20), True
            line.append(word)
            width += len(word) + 1
        lines.append(" ".join(line))
    return tuple(lines)


@functools.cache
def _html_block_pool() -> tuple[str, ...]:
    rng = random.Random("mailgen-html")
    blocks = []
    for _ in range(300):
        words = " ".join(rng.choices(_WORDS, k=12))
        link = f"https://links.example.com/c/{rng.getrandbits(64):x}"
        blocks.append(
            '<table cellpadding="0" cellspacing="0" style="border-collapse:collapse"><tr>'
            '<td style="padding:8px 16px;background:#f4f6f8">'
            f'<span style="font-family:Arial;color:#333">{words}</span> '
            f'<a href="{link}" style="color:#1a73e8">Read more</a></td></tr></table>'
        )
    return tuple(blocks)


def _html_body(rng: random.Random, text: str, body: _Body, budget: int) -> str:
    paragraphs = [p.replace("\r\n", " ") for p in text.split("\r\n\r\n") if p.strip()]
    out = [
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">',
        "<style>p{margin:0 0 12px 0;font-family:Calibri,Arial,sans-serif;font-size:11pt}"
        " .footer{color:#888;font-size:9pt}</style></head>",
        '<body lang="EN-US" style="word-wrap:break-word">',
    ]
    if body.newsletter:
        out.append(
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">'
        )
        out.append(
            f'<img src="https://cdn.news.example/hero-{rng.getrandbits(32):x}.jpg" width="600" alt="">'
        )
    for paragraph in paragraphs:
        escaped = paragraph.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(f'<p class="MsoNormal">{escaped}</p>')
    size = sum(len(line) for line in out)
    # Real HTML mail is mostly markup: pad with the nested tables, spans and links mail clients produce.
    if size < budget:
        blocks = _html_block_pool()
        out += rng.choices(blocks, k=(budget - size) // len(blocks[0]) + 1)
    if body.newsletter:
        out.append(
            f'<img src="https://t.news.example/open/{rng.getrandbits(64):x}.gif" width="1" height="1">'
        )
        out.append("</td></tr></table>")
    out.append("</body></html>")
    return "\r\n".join(out) + "\r\n"


# -- small helpers ------------------------------------------------------------------------------------------


def _address_header(name: str, email: str) -> str:
    if not name:
        return email
    if name.isascii():
        if any(c in name for c in "'.,()"):
            return f'"{name}" <{email}>'
        return f"{name} <{email}>"
    return f"{_encode_header(name)} <{email}>"


def _encode_header(text: str) -> str:
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _ascii_local(name: str) -> str:
    table = str.maketrans({"ü": "u", "ö": "o", "é": "e", "í": "i", "ë": "e", "ï": "i", "'": ""})
    return name.lower().translate(table)


def _token(rng: random.Random, length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choices(alphabet, k=length))
