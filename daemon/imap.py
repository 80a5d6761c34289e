"""IMAP access for the sync daemon: the only module that talks to mail servers, and the only one importing
imapclient.

Owns connecting with the configured transport security (implicit TLS, STARTTLS, or plaintext to loopback
only), login (a password, or SASL XOAUTH2/OAUTHBEARER with an access token from a TokenSource), and the
read-only operations a sync needs: LIST, STATUS, EXAMINE, UID SEARCH, UID FETCH with
BODY.PEEK (so \\Seen is never set) and IDLE. Callers get plain frozen dataclasses, never imapclient objects,
and every failure leaves as an ImapError (or subclass) whose message names the server and reads well in a
log line or the admin UI. Settings come in as an ImapTarget; nothing here reads configuration.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

import imapclient
from imapclient.exceptions import LoginError

from settings.model import is_loopback_host

__all__ = [
    "COMMON_SENT_NAMES",
    "Fetched",
    "FolderInfo",
    "FolderStatus",
    "ImapAuthError",
    "ImapError",
    "ImapSecurityError",
    "ImapSession",
    "ImapTarget",
    "OAuthLogin",
    "TokenSource",
]

log = logging.getLogger(__name__)
_IMAPLIB_LOG = logging.getLogger("imapclient.imaplib")
# Connections being opened at once, per process. A daemon that takes hundreds of mailboxes (its start, or a
# takeover) would otherwise open every IDLE and folder connection in the same second: servers answer such a
# burst slowly (Dovecot forks a login process for each) or refuse it (per-IP login limits), and each login
# then times out. Queued here, a login's timeout starts only when its turn comes.
CONCURRENT_CONNECTS = 10
_CONNECTING = threading.BoundedSemaphore(CONCURRENT_CONNECTS)

SECURITY_MODES: Final = ("ssl", "starttls", "none")
COMMON_SENT_NAMES: Final = ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent")

# UIDs per UID FETCH: keeps command lines far below servers' limits (Dovecot: 64 KB).
_FETCH_CHUNK: Final = 500
# imaplib refuses response lines over 1,000,000 bytes, and a SEARCH result is one line: windows of 80,000 UIDs
# (at most 11 bytes each) keep a big mailbox's first sync from failing with "got more than 1000000 bytes".
_SEARCH_WINDOW: Final = 80_000
# Login replies that mean "try again later", not "wrong password" (RFC 5530 codes, dropped connections).
_TRANSIENT_LOGIN = re.compile(r"\[(UNAVAILABLE|SERVERBUG|INUSE|LIMIT)\]|socket error|EOF", re.IGNORECASE)
# How imapclient (NO: "select failed: ...") and imaplib (BAD: "... command error: BAD ...") word a server's
# refusal of one command, after which the connection is still in step.
_SERVER_REFUSAL = re.compile(r"^\w+ failed: |command error: BAD ")
_BYTES_REPR = re.compile(r"""\bb(['"])(.*?)\1""")


class ImapError(Exception):
    """Any IMAP or network failure. The message is human readable and starts with the server's address."""


class ImapAuthError(ImapError):
    """The server refused the login. Do not retry quickly: repeated failures can lock the account."""


class ImapSecurityError(ImapError):
    """The server's certificate could not be verified, or the configuration would send secrets in clear."""


class TokenSource(Protocol):
    """Where an OAuth login gets its access token. Failures to get one leave as ImapError (ImapAuthError when
    the grant is gone and only a person can fix it)."""

    def access_token(self) -> str: ...

    def rejected(self, token: str) -> None:
        """The server refused this token: do not hand it out again."""


@dataclass(frozen=True)
class OAuthLogin:
    """Sign in with SASL XOAUTH2 or OAUTHBEARER (RFC 7628) instead of a password."""

    mechanism: str  # 'xoauth2' | 'oauthbearer'
    tokens: TokenSource = field(repr=False, compare=False)


@dataclass(frozen=True)
class ImapTarget:
    """Where and how to log in: with password, or with oauth when set. Certificates and host names are always
    verified; ca_file adds a trusted CA or a self-signed certificate (PEM)."""

    host: str
    port: int
    security: str  # 'ssl' | 'starttls' | 'none' (plaintext, loopback only)
    username: str
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    ca_file: str | None = None
    oauth: OAuthLogin | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class FolderInfo:
    name: str
    flags: tuple[str, ...]  # e.g. ('\\HasNoChildren', '\\Sent')


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None  # None when the server lacks CONDSTORE


@dataclass(frozen=True)
class Fetched:
    """What a UID FETCH returned for one message: its header block (or all of it) and its size."""

    uid: int
    data: bytes
    size: int  # RFC822.SIZE of the whole message, as the server reports it


class ImapSession:
    """One logged-in IMAP connection. Use as a context manager (or connect() / close()).

    After a network failure the connection is dropped: later calls raise ImapError until connect() again.
    Not thread safe.
    """

    def __init__(self, target: ImapTarget) -> None:
        self.target = target
        self.capabilities: frozenset[str] = frozenset()
        self._client: Any = None  # imapclient.IMAPClient (untyped)
        self._selected: FolderStatus | None = None
        # time spent connecting and logging in, all connections of this session together: the server's
        # handshake (a connection kept open pays it once)
        self.login_seconds = 0.0

    def __repr__(self) -> str:
        state = "connected" if self._client is not None else "closed"
        return f"<ImapSession {self.target.username}@{self.target.address} {self.target.security} {state}>"

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def supports_idle(self) -> bool:
        return "IDLE" in self.capabilities

    @property
    def supports_condstore(self) -> bool:
        return "CONDSTORE" in self.capabilities

    # -- connection -----------------------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect, secure the connection as configured and log in. Does nothing if already connected."""
        if self._client is not None:
            return
        target = self.target
        _refuse_insecure(target)
        began = time.perf_counter()
        context = _tls_context(target) if target.security != "none" else None
        with _CONNECTING, self._errors("connecting"):
            client = imapclient.IMAPClient(
                target.host,
                target.port,
                ssl=target.security == "ssl",
                ssl_context=context,
                timeout=target.timeout,
            )
            if not _IMAPLIB_LOG.isEnabledFor(logging.DEBUG):
                # imapclient turns imaplib's debug output on (level 5) and sends it to a logger: imaplib
                # then formats a repr of every response, literals included, even when nobody logs it
                # (twice per message fetched: more than the fetch itself)
                client._imap.debug = 0
            try:
                if target.security == "starttls":
                    if not client.has_capability("STARTTLS"):
                        raise ImapSecurityError(
                            f"{target.address}: server does not offer STARTTLS; not logging in without TLS"
                        )
                    client.starttls(context)
                if client.has_capability("LOGINDISABLED"):
                    raise ImapSecurityError(
                        f"{target.address}: server refuses plaintext login; use security 'ssl' or 'starttls'"
                    )
                self._login(client)
                capabilities = frozenset(_text(c).upper() for c in client.capabilities())
                if {"CONDSTORE", "ENABLE"} <= capabilities:
                    # Makes EXAMINE report HIGHESTMODSEQ for every mailbox (Dovecot otherwise omits it for
                    # mailboxes no client has used CONDSTORE on yet).
                    client.enable("CONDSTORE")
            except BaseException:
                _shutdown_quietly(client)
                raise
        self._client = client
        self.capabilities = capabilities
        self.login_seconds += time.perf_counter() - began

    def close(self) -> None:
        """Log out and close the socket. Never raises: the connection may already be gone."""
        client, self._client, self._selected = self._client, None, None
        if client is None:
            return
        try:
            client.logout()
        except Exception as exc:
            log.debug("%s: logout failed: %s", self.target.address, exc)
        finally:
            _shutdown_quietly(client)

    def abort(self) -> None:
        """From another thread: shut the connection's socket down, so a read blocked on it (an IDLE wait)
        fails at once and its thread drops the connection. Never raises."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            # the plain socket's shutdown, also under TLS: it only ends the stream, the reader cleans up
            socket.socket.shutdown(client.socket(), socket.SHUT_RDWR)

    def _login(self, client: Any) -> None:
        target = self.target
        if target.oauth is not None:
            self._token_login(client, target.oauth)
            return
        try:
            client.login(target.username, target.password)
        except LoginError as exc:
            raise self._login_error(exc) from exc

    def _token_login(self, client: Any, oauth: OAuthLogin) -> None:
        """SASL with an access token. A refused token is reported to the source and, when the source then has
        a different one (the refused one was revoked early), tried once more: a refused token login is an
        ImapAuthError like a wrong password."""
        target = self.target
        mechanism = oauth.mechanism.upper()
        if mechanism not in ("XOAUTH2", "OAUTHBEARER"):
            raise ImapError(f"{target.address}: unknown SASL mechanism {oauth.mechanism!r}")
        if not client.has_capability(f"AUTH={mechanism}"):
            offered = sorted(
                _text(c)[5:] for c in client.capabilities() if _text(c).upper().startswith("AUTH=")
            )
            raise ImapAuthError(
                f"{target.address}: server does not offer SASL {mechanism} "
                f"(it offers: {', '.join(offered) or 'no SASL mechanisms'})"
            )
        token = oauth.tokens.access_token()
        for attempt in (1, 2):
            try:
                if mechanism == "XOAUTH2":
                    client.oauth2_login(target.username, token)
                else:
                    client.oauthbearer_login(target.username, token)
                return
            except LoginError as exc:
                error = self._login_error(exc, mechanism)
                if not isinstance(error, ImapAuthError):
                    raise error from exc
                oauth.tokens.rejected(token)
                fresh = oauth.tokens.access_token() if attempt == 1 else token
                if fresh == token:
                    raise error from exc
                token = fresh

    def _login_error(self, exc: LoginError, mechanism: str = "") -> ImapError:
        target = self.target
        detail = _describe(exc)
        how = f" with {mechanism}" if mechanism else ""
        if _TRANSIENT_LOGIN.search(detail):
            return ImapError(f"{target.address}: login as {target.username}{how} failed: {detail}")
        return ImapAuthError(f"{target.address}: login{how} refused for {target.username}: {detail}")

    # -- folders --------------------------------------------------------------------------------------------

    def list_folders(self) -> list[FolderInfo]:
        client = self._connected()
        with self._errors("listing folders"):
            rows = client.list_folders()
        return [
            FolderInfo(name=_text(name), flags=tuple(_text(f) for f in flags)) for flags, _sep, name in rows
        ]

    def sent_folder(self) -> str | None:
        """The folder the server marks \\Sent (RFC 6154), else the first common Sent name that exists."""
        folders = [
            f
            for f in self.list_folders()
            if not {"\\noselect", "\\nonexistent"} & {g.lower() for g in f.flags}
        ]
        for folder in folders:
            if any(flag.lower() == "\\sent" for flag in folder.flags):
                return folder.name
        by_lower_name = {folder.name.lower(): folder.name for folder in folders}
        for name in COMMON_SENT_NAMES:
            if name.lower() in by_lower_name:
                return by_lower_name[name.lower()]
        return None

    def status(self, folder: str) -> FolderStatus:
        """One STATUS command; does not select the folder."""
        client = self._connected()
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"]
        if self.supports_condstore:
            items.append("HIGHESTMODSEQ")
        with self._errors(f"reading status of {folder!r}"):
            data = client.folder_status(folder, items)
        return _folder_status(data, messages_key=b"MESSAGES", action=f"STATUS {folder!r}", target=self.target)

    def select_readonly(self, folder: str) -> FolderStatus:
        """EXAMINE the folder: later searches, fetches and IDLE apply to it; nothing in it can change."""
        client = self._connected()
        self._selected = None
        with self._errors(f"opening {folder!r}"):
            data = client.select_folder(folder, readonly=True)
            if b"UIDNEXT" not in data or b"UIDVALIDITY" not in data:
                # Both are required by RFC 3501 but some servers leave UIDNEXT out; STATUS always has it.
                fallback = self.status(folder)
                data = {
                    b"UIDVALIDITY": fallback.uidvalidity,
                    b"UIDNEXT": fallback.uidnext,
                    b"HIGHESTMODSEQ": fallback.highestmodseq,
                    **data,
                }
        status = _folder_status(
            data, messages_key=b"EXISTS", action=f"EXAMINE {folder!r}", target=self.target
        )
        self._selected = status
        return status

    def unselect(self) -> None:
        """Leave the selected folder (UNSELECT, else CLOSE: the folder was opened read-only, so nothing is
        expunged). A STATUS of the selected folder reports what the connection saw when it selected it, so
        a connection kept open between polls must not stay in one."""
        client = self._connected()
        if self._selected is None:
            return
        self._selected = None
        with self._errors("leaving the folder"):
            if "UNSELECT" in self.capabilities:
                client.unselect_folder()
            else:
                client.close_folder()

    # -- messages in the selected folder --------------------------------------------------------------------

    def search_uids_from(self, first_uid: int) -> list[int]:
        """UIDs >= first_uid in the selected folder, ascending.

        'UID n:*' always matches the highest UID even when it is below n (RFC 3501: '*' is the largest UID
        in use), so results are filtered.
        """
        client, selected = self._selected_folder()
        first = max(1, first_uid)
        found: set[int] = set()
        start = first
        with self._errors("searching for new messages"):
            while selected.uidnext - start > _SEARCH_WINDOW:
                end = start + _SEARCH_WINDOW - 1
                found.update(client.search(["UID", f"{start}:{end}"]))
                start = end + 1
            found.update(client.search(["UID", f"{start}:*"]))
        return sorted(uid for uid in found if uid >= first)

    def search_message_id(self, message_id: str) -> list[int]:
        """UIDs of the selected folder's messages with this Message-ID (without its angle brackets), found
        again after a UIDVALIDITY change; servers match HEADER searches by substring, so callers check the
        content key of what they fetch."""
        client, _ = self._selected_folder()
        value = message_id.strip().strip("<>")
        if not value or any(c in value for c in '"\\\r\n'):
            return []
        with self._errors("searching by Message-ID"):
            return sorted(client.search(["HEADER", "Message-ID", value]))

    def fetch_headers(self, uids: Sequence[int], max_bytes: int | None = None) -> list[Fetched]:
        """Header blocks and sizes, sorted by UID; UIDs no longer in the folder (expunged) are left out.

        With max_bytes, at most max_bytes + 1 bytes of each header block are transferred (a partial FETCH),
        so a header block of megabytes costs what the cap allows and the reader can tell it was cut.
        """
        item = "BODY.PEEK[HEADER]" if max_bytes is None else f"BODY.PEEK[HEADER]<0.{max_bytes + 1}>"
        fetched = self._fetch(uids, item, b"BODY[HEADER]", "fetching headers")
        return [Fetched(uid=uid, data=data, size=size) for uid, data, size in fetched]

    def fetch_messages(self, uids: Sequence[int]) -> list[Fetched]:
        """Raw messages and sizes, sorted by UID; uses BODY.PEEK[] so \\Seen is never set. UIDs no longer
        in the folder (expunged) are left out; a message the server lists with no content comes back empty."""
        fetched = self._fetch(uids, "BODY.PEEK[]", b"BODY[]", "fetching messages")
        return [Fetched(uid=uid, data=data, size=size) for uid, data, size in fetched]

    def still_present(self, uids: Sequence[int]) -> set[int]:
        """Which of these UIDs are still in the selected folder, after hearing of expunges (NOOP). A message
        that another client expunged while this connection had the folder open is answered with no
        content (BODY[] NIL) until then: this tells that apart from a message the server cannot deliver."""
        client, _ = self._selected_folder()
        wanted = sorted({int(uid) for uid in uids})
        if not wanted:
            return set()
        found: set[int] = set()
        with self._errors("checking messages"):
            client.noop()
            for start in range(0, len(wanted), _FETCH_CHUNK):
                chunk = wanted[start : start + _FETCH_CHUNK]
                found.update(client.search(["UID", ",".join(str(uid) for uid in chunk)]))
        return found & set(wanted)

    def idle_wait(self, timeout: float) -> bool:
        """IDLE on the selected folder until the server signals new mail (EXISTS/RECENT) or timeout seconds
        pass; True if new mail was signalled. Always ends with DONE. Keep timeout under 29 minutes (RFC 2177
        lets servers drop idle clients after 30)."""
        client, _ = self._selected_folder()
        if not self.supports_idle:
            raise ImapError(f"{self.target.address}: server does not support IDLE")
        deadline = time.monotonic() + max(0.0, timeout)
        with self._errors("waiting for new mail"):
            while True:
                client.idle()
                try:
                    outcome = self._idle_round(client, deadline)
                except BaseException:
                    with contextlib.suppress(Exception):
                        client.idle_done()
                    self._drop()
                    raise
                _, late_responses = client.idle_done()
                if outcome == "mail" or _signals_new_mail(late_responses):
                    return True
                if outcome == "timeout":
                    return False

    def _idle_round(self, client: Any, deadline: float) -> Literal["mail", "timeout", "restart"]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            started = time.monotonic()
            responses = client.idle_check(timeout=remaining)
            for response in responses:
                if response and response[0] == b"BYE":
                    text = " ".join(_text(part) for part in response[1:] if isinstance(part, bytes | str))
                    raise ImapError(f"{self.target.address}: server closed the connection: {text}")
            if _signals_new_mail(responses):
                return "mail"
            if not responses and time.monotonic() - started < remaining - 0.05:
                # Woken without a complete response: imapclient swallows EOF here, so end IDLE, which
                # raises if the connection is gone, and start over otherwise.
                return "restart"

    def _fetch(self, uids: Sequence[int], item: str, key: bytes, action: str) -> list[tuple[int, bytes, int]]:
        client, _ = self._selected_folder()
        wanted = sorted({int(uid) for uid in uids})
        fetched: list[tuple[int, bytes, int]] = []
        with self._errors(action):
            for start in range(0, len(wanted), _FETCH_CHUNK):
                chunk = wanted[start : start + _FETCH_CHUNK]
                # imaplib's UID FETCH, read here rather than by imapclient's generic response parser, which
                # lexes every byte outside the literals in Python and was a third of the sync's IMAP time
                typ, data = client._imap.uid("FETCH", _uid_set(chunk), f"({item} RFC822.SIZE)")
                if typ != "OK":
                    raise imaplib.IMAP4.error(f"fetch failed: {_text(data[0] if data else b'') or typ}")
                response = _read_fetch_response(data)
                for uid in chunk:
                    answer = response.get(uid)
                    if not answer:
                        continue
                    # a partial fetch answers as b"BODY[HEADER]<0>"; NIL (None) is a message without content
                    found = [v for k, v in answer.items() if k.startswith(key)]
                    if not found:
                        continue
                    content = found[0] if isinstance(found[0], bytes) else b""
                    size = answer.get(b"RFC822.SIZE")
                    fetched.append((uid, content, int(size) if size is not None else len(content)))
        return fetched

    # -- plumbing -------------------------------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._client is None:
            raise ImapError(f"{self.target.address}: not connected")
        return self._client

    def _selected_folder(self) -> tuple[Any, FolderStatus]:
        client = self._connected()
        if self._selected is None:
            raise RuntimeError("no folder selected: call select_readonly() first")
        return client, self._selected

    def _drop(self) -> None:
        """Forget a connection whose state is unknown (timeout mid-response, EOF): it must not be reused."""
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            _shutdown_quietly(client)

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate socket, TLS and imapclient failures into ImapError with a readable message."""
        target = self.target
        where = target.address
        try:
            yield
        except ImapError:
            raise
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise ImapSecurityError(
                f"certificate for {target.host} not trusted: {exc.verify_message or exc}; "
                "set tls_ca_file to trust a self-signed certificate"
            ) from exc
        except ssl.SSLError as exc:
            self._drop()
            raise ImapError(f"{where}: TLS failed while {action}: {exc.reason or exc}") from exc
        except TimeoutError as exc:
            self._drop()
            raise ImapError(f"{where}: no answer within {target.timeout:g}s while {action}") from exc
        except ConnectionRefusedError as exc:
            self._drop()
            raise ImapError(f"{where}: connection refused while {action}") from exc
        except socket.gaierror as exc:
            self._drop()
            raise ImapError(f"{where}: cannot resolve host {target.host}: {exc.strerror or exc}") from exc
        except OSError as exc:
            self._drop()
            raise ImapError(f"{where}: network error while {action}: {exc.strerror or exc}") from exc
        except imaplib.IMAP4.abort as exc:
            self._drop()
            raise ImapError(f"{where}: connection lost while {action}: {_describe(exc)}") from exc
        except imaplib.IMAP4.error as exc:
            if not _SERVER_REFUSAL.search(str(exc)):
                # Not a plain NO/BAD answer: e.g. imaplib gave up on a response line over 1 MB midway, so
                # the rest of that response is still unread and the connection cannot be trusted.
                self._drop()
            raise ImapError(f"{where}: {action} failed: {_describe(exc)}") from exc


def _refuse_insecure(target: ImapTarget) -> None:
    if target.security not in SECURITY_MODES:
        raise ImapSecurityError(
            f"{target.address}: unknown security {target.security!r}; use 'ssl', 'starttls' or 'none'"
        )
    if target.security == "none" and not is_loopback_host(target.host):
        raise ImapSecurityError(
            f"{target.address}: refusing to send the password unencrypted to a non-local host; "
            "use security 'ssl' or 'starttls' ('none' is only allowed for localhost)"
        )


def _tls_context(target: ImapTarget) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if target.ca_file:
        try:
            context.load_verify_locations(cafile=target.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ImapSecurityError(f"cannot load tls_ca_file {target.ca_file}: {exc}") from exc
    return context


def _folder_status(
    data: dict[bytes, Any], messages_key: bytes, action: str, target: ImapTarget
) -> FolderStatus:
    try:
        modseq = data.get(b"HIGHESTMODSEQ")
        return FolderStatus(
            uidvalidity=int(data[b"UIDVALIDITY"]),
            uidnext=int(data[b"UIDNEXT"]),
            messages=int(data[messages_key]),
            highestmodseq=int(modseq) if modseq is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ImapError(f"{target.address}: incomplete answer to {action}: {data!r}") from exc


# One token outside a literal: a parenthesis, a quoted string, or an atom with its section and partial
# range (BODY[HEADER]<0>); a literal's {n} marker ends the line imaplib hands over with the literal.
_FETCH_TOKEN = re.compile(rb'\s*([()]|"(?:[^"\\]|\\.)*"|[^\s()"\[{]+(?:\[[^\]]*\](?:<[0-9.]+>)?)?)')
_LITERAL_MARKER = re.compile(rb"\{\d+\+?\}\s*$")
_QUOTED_ESCAPE = re.compile(rb'\\([\\"])')


def _uid_set(uids: Sequence[int]) -> str:
    """A UID set with runs folded (1:500 rather than 500 numbers)."""
    ranges: list[str] = []
    first = previous = uids[0]
    for uid in uids[1:]:
        if uid != previous + 1:
            ranges.append(f"{first}:{previous}" if previous != first else str(first))
            first = uid
        previous = uid
    ranges.append(f"{first}:{previous}" if previous != first else str(first))
    return ",".join(ranges)


def _read_fetch_response(data: Sequence[Any]) -> dict[int, dict[bytes, Any]]:
    """UID -> {item name (upper case) -> value} from imaplib's untagged FETCH data.

    imaplib hands over each response as pieces: a tuple (text up to a literal, the literal's bytes) per
    literal and the text after the last literal as bytes. Values are bytes (atoms, quoted strings,
    literals), None (NIL) or tuples (lists, such as FLAGS). Unsolicited responses without a UID are left
    out. Anything unexpected falls back to imapclient's generic parser, so odd servers cost speed only.
    """
    if not data or data == [None]:
        return {}
    tokens: list[Any] = []
    try:
        for piece in data:
            if isinstance(piece, tuple):
                tokens.extend(_fetch_tokens(_LITERAL_MARKER.sub(b"", piece[0])))
                tokens.append(_Literal(piece[1]))
            elif isinstance(piece, bytes):
                tokens.extend(_fetch_tokens(piece))
        return _fetch_responses(tokens)
    except (ValueError, IndexError, TypeError):
        log.debug("unexpected FETCH response, read by imapclient's parser", exc_info=True)
    from imapclient.response_parser import parse_fetch_response

    return {
        uid: {k.upper(): v for k, v in values.items() if isinstance(k, bytes)}
        for uid, values in parse_fetch_response(list(data), True, True).items()
    }


def _fetch_tokens(text: bytes) -> list[bytes]:
    tokens: list[bytes] = []
    position = 0
    while match := _FETCH_TOKEN.match(text, position):
        if match.end() == position:
            break
        tokens.append(match[1])
        position = match.end()
    if text[position:].strip():
        raise ValueError(f"unexpected {text[position : position + 20]!r} in a FETCH response")
    return tokens


class _Literal:
    """A literal among the tokens: never taken for a parenthesis or an atom, whatever its bytes hold."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _fetch_responses(tokens: list[Any]) -> dict[int, dict[bytes, Any]]:
    responses: dict[int, dict[bytes, Any]] = {}
    position = 0
    while position < len(tokens):
        int(tokens[position])  # the message sequence number
        if tokens[position + 1] != b"(":
            raise ValueError("FETCH response without its list")
        values, position = _fetch_list(tokens, position + 2, names=True)
        items = dict(zip(values[::2], values[1::2], strict=True))
        uid = items.get(b"UID")
        if uid is not None:
            responses.setdefault(int(uid), {}).update(items)
    return responses


def _fetch_list(tokens: list[Any], position: int, *, names: bool = False) -> tuple[list[Any], int]:
    """The values of a parenthesized list starting at `position` (after its opening parenthesis), and the
    position after its closing one; with `names`, every other value is an item name, made upper case."""
    values: list[Any] = []
    while True:
        token = tokens[position]
        position += 1
        if isinstance(token, _Literal):
            values.append(token.data)
        elif token == b")":
            return values, position
        elif token == b"(":
            inner, position = _fetch_list(tokens, position)
            values.append(tuple(inner))
        elif token[:1] == b'"':
            values.append(_QUOTED_ESCAPE.sub(rb"\1", token[1:-1]))
        elif token.upper() == b"NIL":
            values.append(None)
        else:
            values.append(token.upper() if names and len(values) % 2 == 0 else token)


def _signals_new_mail(responses: Sequence[Any]) -> bool:
    return any(
        isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")
        for response in responses
    )


def _describe(exc: BaseException) -> str:
    """imapclient puts server replies in messages as bytes reprs (b'[...] text'); show the text."""
    return _BYTES_REPR.sub(r"\2", str(exc)) or type(exc).__name__


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _shutdown_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()
