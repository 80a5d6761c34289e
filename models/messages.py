"""The message vocabulary: the few frozen types and enums an email is described with on its way in.

Parsing (daemon.parsing) produces `MessageHeaders` and `MessageBody`; matching (daemon.matching) turns the
headers into a `Placement` (whom the email is filed on) or a `SkipReason`; recording (models.email_log) takes
an `EmailToRecord` and carries the decision out without deciding again. The types live here, in models/,
because recording consumes them and models/ imports nothing of daemon/. This module imports nothing but the
standard library, so the parser's worker processes load it without SQLAlchemy.

Why each type exists (and no other does):

- `Address`, `MessageHeaders`: what the header block says, cheap enough for every message of a mailbox; the
  sync decides from them alone before deciding whether a body is worth fetching. Parsing only reports facts
  here (list headers, Precedence, Auto-Submitted, whether the block was cut); matching judges them.
- `Attachment`, `MessageBody`: what the full parse of a logged message adds. It is separate from the headers
  because it is computed in a worker process from the raw bytes, after the headers were read in the sync.
- `Email`: headers, body and the content key together: the message as the CRM stores it.
- `NewContact`, `Placement`: matching's decision for a message that is logged: its direction, the contacts it
  is linked to (by address: already contacts, or made by this batch or an earlier one of the same run) and
  the contacts to create. Recording links and creates exactly these.
- `MessageRef`: where one copy of a message lives (mailbox, folder, UIDVALIDITY, UID).
- `EmailToRecord`: one message of a batch for recording: the email, its placement and its copy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Direction(enum.StrEnum):
    """Inbound mail was written by someone outside the team; outbound by a team member."""

    IN = "in"
    OUT = "out"


class Outcome(enum.StrEnum):
    """What happened to one copy of a message (the `outcome` column of SeenMessage)."""

    LOGGED = "logged"  # it became a new activity
    DUPLICATE = "duplicate"  # it already was an activity (another mailbox or folder): a sighting was added
    SKIPPED = "skipped"  # decided not to log it (the SkipReason says why)
    QUARANTINED = "quarantined"  # it could not be processed; kept with its raw bytes and retried later


class SkipReason(enum.StrEnum):
    """Why a message is not logged; counted per reason in the sync's result."""

    NO_PARTICIPANTS = "no participants"  # no readable address at all
    INTERNAL = "internal only"  # only team members take part
    IGNORED = "ignored"  # every outside participant matches [matching] ignore
    AUTOMATED = "automated"  # automated mail without a known contact (it never creates any)
    BULK = "bulk"  # more recipients than [matching] max_recipients and no known contact among them
    NO_CONTACT = "no contact"  # no participant is a contact and none may become one


class QuarantineReason(enum.StrEnum):
    """Why a message was set aside; the first words of the quarantine row's reason."""

    PARSE_ERROR = "cannot parse"  # not readable as a message, or the MIME structure is beyond the caps
    PARSE_TIMEOUT = "parse timeout"  # parsing took longer than [matching] parse_timeout_seconds
    PARSER_CRASHED = "parser crashed"  # the worker process parsing it died
    RECORD_ERROR = "cannot record"  # the database refused a value of this message
    EMPTY_FETCH = "empty fetch"  # the server listed the message but returned no content for it
    CONTACT_GONE = "contact gone"  # a contact the decision linked was deleted before the email was recorded

    def because(self, detail: str) -> str:
        return f"{self.value}: {detail}" if detail else self.value


@dataclass(frozen=True)
class Address:
    """One mailbox of an address header: the display name ('' when none) and the lower-case address."""

    name: str
    email: str

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    def formatted(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class MessageHeaders:
    """What the header block says. Facts only: whether the mail is automated is matching's judgement."""

    message_id: str | None
    subject: str
    date: datetime | None
    from_: tuple[Address, ...]
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    list_id: str = ""
    list_unsubscribe: bool = False
    precedence: str = ""  # lower case, e.g. 'bulk'
    auto_submitted: str = ""  # lower case, without parameters, e.g. 'auto-replied'
    truncated: bool = False  # the header block was longer than [matching] max_header_bytes and was cut
    delivery_report: bool = False  # Content-Type multipart/report; report-type=delivery-status (a DSN)

    @property
    def author(self) -> Address | None:
        """Who wrote it: the first From address, else the Sender."""
        first = (self.from_ or self.sender)[:1]
        return first[0] if first else None


@dataclass(frozen=True)
class Attachment:
    """A file carried by the message; `content` is None when it is over the attachment size limit."""

    filename: str
    content_type: str
    size: int
    content: bytes | None


@dataclass(frozen=True)
class MessageBody:
    """What the full parse of a message adds to its headers: readable text, sanitized HTML, attachments."""

    text: str
    html: str | None  # sanitized: safe to show in the panel
    snippet: str
    attachments: tuple[Attachment, ...] = ()
    truncated: bool = False  # over the size limit (headers only) or MIME parts beyond the caps left out
    # of a delivery status report (RFC 3464): the recipients whose Action is "failed", lower case
    failed_recipients: tuple[str, ...] = ()

    @classmethod
    def headers_only(cls) -> MessageBody:
        return cls(text="", html=None, snippet="", truncated=True)


@dataclass(frozen=True)
class Email:
    """A message as the CRM stores it: what its headers say, what its body holds, and the key that
    identifies it in every inbox it reached (see daemon.parsing.content_key)."""

    headers: MessageHeaders
    body: MessageBody
    content_key: str

    @property
    def thread_key(self) -> str:
        """The thread's root: first of References, else In-Reply-To, else this message itself."""
        h = self.headers
        root = (h.references[:1] or h.in_reply_to[:1] or (h.message_id,))[0]
        return root or self.content_key


@dataclass(frozen=True)
class NewContact:
    """An outside participant matching decided to make a contact of (unless someone made it meanwhile)."""

    email: str
    name: str  # display name from the message, '' when none
    company_domain: str | None  # the registrable domain of the company to join; None for free-mail


@dataclass(frozen=True)
class Placement:
    """Matching's decision for a message that is logged: whom it is filed on. Never empty, but for a reply
    into a deal's thread from an unknown address (`thread_only`)."""

    direction: Direction
    link: tuple[str, ...]  # addresses of contacts to link: known, or made by this run before this message
    create: tuple[NewContact, ...] = ()  # contacts to make, then link too
    author_email: str | None = None  # the internal sender of outbound mail
    bulk: bool = False  # over [matching] max_recipients: nothing is created
    # a reply into a thread filed on a deal from nobody known: filed on that deal (and its company) alone
    thread_only: bool = False
    # a delivery failure report: filed on the contacts whose address failed (`link`, known once the body
    # is parsed), marked as a bounce on the timeline and on the address
    bounce: bool = False


@dataclass(frozen=True)
class MessageRef:
    """Where one copy of a message lives: mailbox, folder and its IMAP (or mbox) identity."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True)
class EmailToRecord:
    """One message of a batch for models.email_log.record_emails: what it says, whom it concerns (decided
    by matching) and where this copy of it lives."""

    email: Email
    placement: Placement
    ref: MessageRef
