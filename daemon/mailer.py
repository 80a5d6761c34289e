"""Outgoing email: the one module that speaks SMTP (smtplib) and builds the messages it sends.

Callers hand over plain `Letter`s (recipient, subject, text and HTML bodies) and get one `Delivery` back per
letter; nothing here raises because of one letter. Messages are built with the standard library's
`EmailMessage` under `email.policy.SMTP` (7-bit: bodies go quoted-printable or base64): addresses go through
`email.headerregistry.Address` (display names quoted or RFC 2047-encoded as needed), long values are folded,
and every value that may come from mail or from users (a contact's or a user's name, a subject) is first made
one line: control characters and line breaks become spaces, so no value can end a header and start another.
Domains are sent in their ASCII (IDNA) form.

Each letter is its own attempt. A letter that cannot be built (a bad address, a name that cannot be encoded)
or that the server refuses (recipient, sender, content) fails alone, and the next one goes out on the same
connection. When the connection breaks, the letter being sent fails and the next one opens a new connection.
Only when the server cannot be reached or refuses the login do the letters left fail at once with that reason,
instead of each waiting out its own timeout. Failures are plain text for people (server replies decoded, never
the password). How the connection logs in lives in `Mailer._connected`: a password (smtplib's LOGIN/PLAIN),
or with `[smtp] oauth_mailbox` SASL XOAUTH2 with an access token from that mailbox's OAuth grant (the same
token source the IMAP sign-in uses, daemon.credentials): a token the server refuses is reported to the source
and the login is tried once more with a fresh one (Microsoft 365 has switched basic authentication off for
SMTP AUTH; Google accepts the mail.google.com scope).
"""

from __future__ import annotations

import email.errors
import email.policy
import smtplib
import ssl
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from types import TracebackType

from daemon.imap import TokenSource
from settings import SmtpSettings

# SMTP line ends; bodies as quoted-printable or base64, so a server without 8BITMIME takes them too
_POLICY = email.policy.SMTP.clone(cte_type="7bit")

# Server replies and local checks that concern one letter: the connection stays usable for the next one.
_LETTER_ERRORS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)


class AddressError(ValueError):
    """Text that is not one email address."""


@dataclass(frozen=True)
class Letter:
    """One message to one person, as plain values; the mailer builds the headers."""

    to_address: str
    to_name: str
    subject: str
    text: str
    html: str | None = None
    automated: bool = True
    """Adds `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders do not answer."""


@dataclass(frozen=True)
class Delivery:
    """What became of one letter: `error` is None when the server accepted it."""

    letter: Letter
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def one_line(text: str) -> str:
    """`text` with every control character and line or paragraph break turned into a space, and runs of
    spaces collapsed: safe to put in a header whatever it came from."""
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    return " ".join(cleaned.split())


def parse_address(text: str, *, display_name: str = "") -> Address:
    """One address (`ann@example.com`), with `display_name` made one line; raises AddressError."""
    spec = text.strip()
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in spec) or spec.count("@") != 1:
        raise AddressError(f"{text!r} is not an email address")
    local, _, domain = spec.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
        address = Address(display_name=one_line(display_name), addr_spec=f"{local}@{domain}")
    except (ValueError, IndexError, UnicodeError, email.errors.MessageError):
        raise AddressError(f"{text!r} is not an email address") from None
    if not address.username or not address.domain:
        raise AddressError(f"{text!r} is not an email address")
    return address


def sender_address(settings: SmtpSettings) -> Address:
    """`[smtp] from_address`, plain (`crm@example.com`) or with a name (`Threadline <crm@example.com>`)."""
    name, spec = parseaddr(settings.from_address)
    try:
        return parse_address(spec or settings.from_address, display_name=name)
    except AddressError:
        raise AddressError(f"[smtp] from_address {settings.from_address!r} is not an email address") from None


def compose(letter: Letter, *, sender: Address, recipient: Address, now: datetime) -> EmailMessage:
    """The message for `letter` from `sender` to `recipient` (see `parse_address`)."""
    message = EmailMessage(policy=_POLICY)
    message["Subject"] = one_line(letter.subject)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("threadline", domain=sender.domain or "threadline.local")
    if letter.automated:
        message["Auto-Submitted"] = "auto-generated"
    message.set_content(letter.text)
    if letter.html is not None:
        message.add_alternative(letter.html, subtype="html")
    return message


def smtp_reason(exc: BaseException) -> str:
    """One line saying why SMTP failed (server replies decoded; never the password)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{addr}: {code} {_decode(msg)}" for addr, (code, msg) in exc.recipients.items()]
        return "recipient refused: " + "; ".join(parts)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _decode(value: bytes | str) -> str:
    return one_line(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)


class Mailer:
    """Sends letters over one SMTP connection at a time: TLS verified by default, password from a Secret.

    Use as a context manager; `send` returns a Delivery and never raises for SMTP or for the letter.
    """

    def __init__(
        self, settings: SmtpSettings, *, tokens: TokenSource | None = None, oauth_username: str = ""
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.oauth_username = oauth_username or (settings.username or "")
        self.where = f"SMTP {settings.host}:{settings.port}"
        self._client: smtplib.SMTP | None = None
        self._unreachable: str | None = None
        self._sender: Address | None = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, letter: Letter, *, now: datetime) -> Delivery:
        if self._unreachable is not None:
            return Delivery(letter, self._unreachable)
        try:
            if self._sender is None:
                self._sender = sender_address(self.settings)
            recipient = parse_address(letter.to_address, display_name=letter.to_name)
            data = compose(letter, sender=self._sender, recipient=recipient, now=now).as_bytes()
        except AddressError as exc:
            return Delivery(letter, f"not sent: {exc}")
        except UnicodeError:  # e.g. a lone surrogate in a name: no charset can write it
            return Delivery(letter, f"not sent: the message to {letter.to_address!r} cannot be encoded")
        try:
            client = self._connected()
        except (smtplib.SMTPException, OSError) as exc:
            # nothing gets through this run: the letters left fail with this reason without retrying
            self._unreachable = f"{self.where}: {smtp_reason(exc)}"
            return Delivery(letter, self._unreachable)
        try:
            client.sendmail(self._sender.addr_spec, [recipient.addr_spec], data)
        except _LETTER_ERRORS as exc:
            if client.sock is None:  # a 421 reply closed the connection: the next letter opens a new one
                self._client = None
            refused = f"{self.where} refused the message to {recipient.addr_spec}"
            return Delivery(letter, f"{refused}: {smtp_reason(exc)}")
        except (smtplib.SMTPException, OSError) as exc:
            self.close()  # the connection is in an unknown state: the next letter opens a new one
            return Delivery(letter, f"{self.where}: {smtp_reason(exc)}")
        return Delivery(letter)

    def _connected(self) -> smtplib.SMTP:
        if self._client is not None:
            return self._client
        s = self.settings
        if s.oauth_mailbox and self.tokens is None:
            raise smtplib.SMTPException(
                f"[smtp] oauth_mailbox {s.oauth_mailbox!r} is not a mailbox signing in with OAuth"
            )
        if s.username and s.password is None and not s.oauth_mailbox:
            raise smtplib.SMTPException("[smtp] username is set but no password (password_env/_file)")
        context = ssl.create_default_context(cafile=s.tls_ca_file) if s.security != "none" else None
        client: smtplib.SMTP
        if s.security == "ssl":
            client = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds, context=context)
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
        try:
            client.ehlo()
            if s.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if self.tokens is not None:
                self._oauth_login(client, self.tokens)
            elif s.username and s.password is not None:
                client.login(s.username, s.password.reveal())
        except BaseException:
            client.close()
            raise
        self._client = client
        return client

    def _oauth_login(self, client: smtplib.SMTP, tokens: TokenSource) -> None:
        """SASL XOAUTH2 with the source's access token; a refused token once more with a fresh one."""
        for attempt in (1, 2):
            try:
                token = tokens.access_token()
            except Exception as exc:  # reconnect needed, provider unreachable: this run sends nothing
                raise smtplib.SMTPException(f"cannot get an OAuth access token: {exc}") from None
            initial = f"user={self.oauth_username}\x01auth=Bearer {token}\x01\x01"

            def xoauth2(challenge: bytes | None = None, initial: str = initial) -> str:
                # the server's error challenge is answered with an empty line; it then says 535
                return initial if challenge is None else ""

            try:
                client.auth("XOAUTH2", xoauth2, initial_response_ok=True)
                return
            except smtplib.SMTPAuthenticationError:
                tokens.rejected(token)
                if attempt == 2:
                    raise

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            client.close()
