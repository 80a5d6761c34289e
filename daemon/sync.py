"""One mailbox's sync: the per-folder state machine that files new mail exactly once, at a bounded cost per
message.

`sync_mailbox` runs one pass over a mailbox: per folder one STATUS round trip decides whether there is
anything to do (a folder with nothing new costs nothing more). New UIDs are handled in batches
(`[matching] batch_size`), each in four steps:

1. Headers: `UID FETCH BODY.PEEK[HEADER]<0.N>` with RFC822.SIZE, capped at `max_header_bytes`, read
   (daemon.parsing.headers) by the parser's worker processes, ahead of the bodies they are parsing: the
   sync's own process is the pipeline's critical path, so it hands them every parse it can.
2. Decide: daemon.matching judges each message's headers; the batch's outside addresses and Message-IDs are
   looked up once (chunked lookups, so no statement grows with a message's recipients); each message is then
   skipped (with its reason), a duplicate of an activity, or to be logged with its `Placement`. Most mail
   (internal, newsletters, unknown senders) never has its body fetched.
3. Bodies: the messages to log are fetched (`BODY.PEEK[]`) in groups of bounded size and handed to the
   parser's worker processes (daemon.workers) as they arrive; a message over `max_message_bytes` by the
   size the server reports is never fetched: it is logged with its headers only. The next batch is fetched
   and decided while these are parsed, and contacts an earlier batch makes count as known for later ones.
4. Record: models.email_log.record_emails files the batch; its activities, SeenMessage rows, quarantined
   messages and the folder cursor commit in one transaction, so a kill at any instant loses and duplicates
   nothing.

Every failure of one message ends with that message quarantined with its reason (`QuarantineReason`: parse
error or timeout, a crashed parser, a database refusal, an empty fetch) and the cursor moving on; quarantined
messages are retried on later runs. A failure of the server or the database (down, timeout) fails the run
instead: nothing of the unfinished batch is committed, the mailbox records the error and backs off, and the
next run starts from the last committed cursor, so no mail is ever skipped. Stop (`stop` set, SIGTERM) is
honoured within seconds even mid-parse: parses still running after a short grace are abandoned with their
batch, which the next run does again.

The same pipeline backfills mbox files (daemon.mbox). The mailbox is never changed: folders are opened
read-only and bodies are fetched with PEEK.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Table, select, update
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import Fetched, ImapAuthError, ImapError, ImapSession, ImapTarget
from daemon.matching import (
    MatchRules,
    Participants,
    Team,
    bounce_lookup,
    build_rules,
    decide,
    place_bounce,
    read_participants,
    second_look,
)
from daemon.parsing.content_key import content_key
from daemon.parsing.headers import parse_headers
from daemon.parsing.message import assemble
from daemon.workers import ParseFailure, ParseResult, ParserPool, StopRequested, wait_for
from models.contacts import company_ids_by_domain, contact_ids_by_email
from models.db import dialect_insert, transaction
from models.email_log import (
    PendingQuarantine,
    RecordOutcome,
    SeenRow,
    activity_ids_by_content_key,
    add_sightings,
    mark_seen,
    pending_quarantine,
    quarantine_message,
    quarantined_raw,
    record_emails,
    resolve_quarantine,
    threads_on_open_deals,
)
from models.history import Skipped, index_skipped, settle_history
from models.messages import (
    Email,
    EmailToRecord,
    MessageBody,
    MessageHeaders,
    MessageRef,
    Outcome,
    Placement,
    QuarantineReason,
    SkipReason,
)
from models.schema import FolderSyncState, MailboxStatus, User
from settings import MailboxSettings, MatchingSettings

log = logging.getLogger("threadline.sync")

_FOLDERS: Table = FolderSyncState.__table__  # type: ignore[assignment]
_STATUS: Table = MailboxStatus.__table__  # type: ignore[assignment]

# Backoff of a failing mailbox: 30 s, 1 min, 2 min, ... capped at 30 min; a refused login starts at 5 min
# and caps at 6 h, because hammering a wrong password gets accounts locked.
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 30 * 60.0
AUTH_BACKOFF_BASE_SECONDS = 5 * 60.0
AUTH_BACKOFF_CAP_SECONDS = 6 * 3600.0
# Raw bytes fetched per UID FETCH of bodies, and held while their parses are in flight: memory stays bounded
# whatever the messages' sizes.
FETCH_GROUP_BYTES = 8 * 1024 * 1024
IN_FLIGHT_BYTES = 24 * 1024 * 1024
# After a stop request, parses already running get this long to finish before their batch is abandoned.
STOP_GRACE_SECONDS = 4.0


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SyncResult:
    """What one pass over a mailbox did. new = logged + skipped + quarantined (+ messages expunged meanwhile).

    `logged` counts messages filed in the CRM, including `duplicates` (already an activity from another
    mailbox or folder: this one was added to its list of mailboxes).
    """

    mailbox: str
    new: int = 0
    logged: int = 0
    contacts_created: int = 0
    skipped: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    error: str | None = None
    duplicates: int = 0
    retried: int = 0  # quarantined messages that went through on this run
    auth_failed: bool = False
    skip_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    # of `seconds`, the time spent connecting to the IMAP server and logging in (the server's handshake,
    # which a daemon's kept-open connections skip): `seconds` minus this is the sync's own time
    login_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, object]:
        return {
            "mailbox": self.mailbox,
            "new": self.new,
            "logged": self.logged,
            "contacts_created": self.contacts_created,
            "skipped": self.skipped,
            "quarantined": self.quarantined,
            "seconds": round(self.seconds, 3),
            "login_seconds": round(self.login_seconds, 3),
            "error": self.error,
        }

    def summary(self) -> str:
        line = (
            f"{self.mailbox}: {self.new} new, {self.logged} logged, "
            f"{self.contacts_created} contacts created, {self.skipped} skipped, "
            f"{self.quarantined} quarantined in {self.seconds:.1f} s"
        )
        return f"{line}; error: {self.error}" if self.error else line


class MessageSource(Protocol):
    """Where a folder's messages come from: an IMAP folder (ImapSession) or an mbox file (daemon.mbox)."""

    def fetch_headers(self, uids: Sequence[int], max_bytes: int | None = None) -> Sequence[Fetched]: ...

    def fetch_messages(self, uids: Sequence[int]) -> Sequence[Fetched]: ...

    def still_present(self, uids: Sequence[int]) -> set[int]: ...


def next_backoff(failures: int, *, auth: bool, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next attempt after `failures` consecutive failures (exponential, jittered).

    Half the delay is fixed and half random, so mailboxes failing together (a server restart) spread out.
    """
    rng = rng or random.Random()
    base, cap = (AUTH_BACKOFF_BASE_SECONDS, AUTH_BACKOFF_CAP_SECONDS) if auth else (
        BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS)  # fmt: skip
    delay: float = min(cap, base * 2.0 ** min(max(failures, 1) - 1, 30))
    return delay / 2 + rng.uniform(0, delay / 2)


def mailbox_target(mailbox: MailboxSettings) -> ImapTarget:
    return ImapTarget(
        host=mailbox.host,
        port=mailbox.port,
        security=mailbox.security,
        username=mailbox.username,
        password=mailbox.password.reveal(),
        timeout=mailbox.timeout_seconds,
        ca_file=mailbox.tls_ca_file,
    )


class MailboxConnections:
    """The IMAP connections of one mailbox: one per folder, kept open from poll to poll by the daemon, or
    one for every folder for a single pass (`per_folder=False`: each extra login costs more than it saves).

    Servers such as Dovecot answer STATUS for the folder a connection last looked at in ~2 ms, but take 20-50
    ms when one connection alternates between big folders, so a daemon keeps a connection per folder. A
    connection that fails is dropped (ImapSession does that) and opened again on next use.
    """

    def __init__(
        self,
        mailbox: MailboxSettings,
        factory: Callable[[ImapTarget], ImapSession] = ImapSession,
        *,
        per_folder: bool = True,
        target: ImapTarget | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.factory = factory
        self.per_folder = per_folder
        # how to sign in: the password target by default; an OAuth mailbox's comes from daemon.credentials
        self.target = target if target is not None else mailbox_target(mailbox)
        self._sessions: dict[str, ImapSession] = {}
        self._folders: list[str] | None = None

    def for_folder(self, folder: str) -> ImapSession:
        key = folder if self.per_folder else ""
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self.factory(self.target)
        session.connect()
        return session

    def folders(self) -> list[str]:
        """The configured folders, else INBOX plus the folder the server marks \\Sent (LIST once)."""
        if self.mailbox.folders:
            return list(self.mailbox.folders)
        if self._folders is None:
            sent = self.for_folder("INBOX").sent_folder()
            self._folders = ["INBOX"] if sent is None or sent.upper() == "INBOX" else ["INBOX", sent]
        return list(self._folders)

    def remember_folders(self, synced: Sequence[str]) -> None:
        """The folders an earlier run synced (saved with their cursors): used instead of a LIST, which a poll
        with nothing new cannot afford; a failing folder makes the next run LIST again."""
        if self._folders is None and "INBOX" in synced:
            self._folders = ["INBOX", *sorted(f for f in synced if f != "INBOX")]

    def forget_folders(self) -> None:
        """The folder list may have changed (a folder failed): look it up again next time."""
        self._folders = None

    @property
    def login_seconds(self) -> float:
        """Time spent connecting and logging in, over every connection this mailbox opened."""
        return sum(getattr(session, "login_seconds", 0.0) for session in self._sessions.values())

    def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()


# ---- one mailbox ----------------------------------------------------------------------------------------


def sync_mailbox(
    mailbox: MailboxSettings,
    sessions: sessionmaker[Session],
    *,
    matching: MatchingSettings,
    team: Team,
    now_fn: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None,
    folders: Sequence[str] | None = None,
    connections: MailboxConnections | None = None,
    imap_factory: Callable[[ImapTarget], ImapSession] = ImapSession,
    parser: ParserPool | None = None,
    rng: random.Random | None = None,
) -> SyncResult:
    """One pass over a mailbox: every folder's new mail, then due quarantine retries.

    Never raises for IMAP, parsing or database trouble: the result's `error` says what went wrong, and the
    mailbox's MailboxStatus records it with the time of the next attempt (backoff). Pass `connections` to keep
    IMAP connections open across polls (left open; a dropped one reconnects next time) and `parser` to share
    one pool of parser processes across calls; otherwise both are made here and closed at the end (the
    parser processes start only when a body is to be parsed).
    """
    started = time.monotonic()
    attempt_at = now_fn()
    own_parser = parser is None
    pool = parser if parser is not None else ParserPool(matching)
    own_connections = connections is None
    imap = (
        connections
        if connections is not None
        else MailboxConnections(mailbox, imap_factory, per_folder=False)
    )
    pipeline = Pipeline(
        mailbox, sessions, matching=matching, team=team, parser=pool, now_fn=now_fn, stop=stop
    )
    errors: list[str] = []
    auth_failed = False
    previous: tuple[str | None, int | None, datetime | None] | None = None
    login_before = imap.login_seconds
    login_seconds = 0.0
    try:
        # one read for everything a poll with nothing new needs from the database (Core statements: a poll
        # must not pay for configuring the ORM)
        with sessions() as session:
            states = {
                folder: (uidvalidity, last_uid)
                for folder, uidvalidity, last_uid in session.execute(
                    select(_FOLDERS.c.folder, _FOLDERS.c.uidvalidity, _FOLDERS.c.last_uid).where(
                        _FOLDERS.c.mailbox == mailbox.name
                    )
                )
            }
            row = session.execute(
                select(_STATUS.c.last_error, _STATUS.c.consecutive_failures, _STATUS.c.last_success_at).where(
                    _STATUS.c.mailbox == mailbox.name
                )
            ).first()
            previous = (row[0], row[1], row[2]) if row is not None else None
            due = pending_quarantine(session, mailbox.name, now=attempt_at)
        imap.remember_folders([f for f in states if not f.startswith("mbox:")])
        for folder in folders or imap.folders():
            if pipeline.stopping:
                break
            try:
                sync_folder(pipeline, imap.for_folder(folder), folder, known=states.get(folder))
            except ImapAuthError:
                raise
            except ImapError as exc:
                imap.forget_folders()
                message = _scrub(str(exc), mailbox)
                errors.append(f"folder {folder!r}: {message}")
                _record_folder_error(pipeline, folder, message)
        if due and not pipeline.stopping:
            pipeline.retry_quarantine(due, imap)
    except ImapAuthError as exc:
        auth_failed = True
        errors.append(_scrub(str(exc), mailbox))
    except ImapError as exc:
        errors.append(_scrub(str(exc), mailbox))
    except SQLAlchemyError as exc:
        errors.append(f"database error: {_first_line(exc)}")
        log.exception("%s: database error during sync", mailbox.name)
    except StopRequested:
        log.info("%s: stopped; the unfinished batch is done again on the next run", mailbox.name)
    except Exception as exc:  # the parser pool or a bug: the run fails and is retried, no mail is skipped
        errors.append(f"{type(exc).__name__}: {exc}")
        log.exception("%s: sync failed", mailbox.name)
    finally:
        login_seconds = imap.login_seconds - login_before
        if own_connections:
            imap.close()
        if own_parser:
            pool.close()
    error = "; ".join(errors) if errors else None
    result = pipeline.result()
    now = now_fn()
    if error is not None or result.new or result.retried or not _recently_healthy(previous, now):
        try:
            _record_mailbox_status(
                sessions, mailbox.name, attempt_at=attempt_at, now=now, error=error, auth=auth_failed, rng=rng
            )
        except SQLAlchemyError as exc:
            log.error("%s: cannot record the mailbox status: %s", mailbox.name, _first_line(exc))
            error = error or f"database error: {_first_line(exc)}"
    return replace(
        result,
        seconds=time.monotonic() - started,
        login_seconds=login_seconds,
        error=error,
        auth_failed=auth_failed,
    )


# A healthy mailbox's status row is rewritten at most this often when polls find nothing new.
_STATUS_REFRESH = timedelta(seconds=60)


def _recently_healthy(status: tuple[str | None, int | None, datetime | None] | None, now: datetime) -> bool:
    """Whether the last poll succeeded less than _STATUS_REFRESH ago (then a poll with nothing new writes
    nothing)."""
    if status is None:
        return False
    last_error, failures, last_success_at = status
    return (
        last_error is None
        and not failures
        and last_success_at is not None
        and (now - last_success_at < _STATUS_REFRESH)
    )


def sync_folder(
    pipeline: Pipeline, imap: ImapSession, folder: str, *, known: tuple[int | None, int] | None = None
) -> None:
    """New mail of one folder, batch by batch; nothing but one STATUS when nothing is new.

    `known` is the folder's saved (UIDVALIDITY, last UID), read by the caller; None for a folder never synced.
    """
    name = pipeline.mailbox.name
    status = imap.status(folder)
    known_validity, last_uid = known if known is not None else (None, 0)
    if known_validity == status.uidvalidity and status.uidnext - 1 <= last_uid:
        return
    selected = imap.select_readonly(folder)
    uidvalidity = selected.uidvalidity
    if known_validity is not None and known_validity != uidvalidity:
        # UIDs of the old generation mean nothing now: rescan, content keys keep logged mail from doubling
        log.warning(
            "%s/%s: UIDVALIDITY changed from %s to %s, rescanning the folder",
            name, folder, known_validity, uidvalidity,
        )  # fmt: skip
        last_uid = 0
    uids = imap.search_uids_from(last_uid + 1)
    if len(uids) > pipeline.matching.batch_size:  # a backlog shows as waiting before its first batch commits
        with transaction(pipeline.sessions) as session:
            _folder_state(session, name, folder).messages_waiting = len(uids)

    def batches() -> Iterator[tuple[list[int], Cursor]]:
        size = pipeline.matching.batch_size
        for start in range(0, len(uids), size):
            batch = uids[start : start + size]
            done = start + size >= len(uids)
            # once every found UID is handled, everything below UIDNEXT is too (expunged mail included)
            last = max(batch[-1], selected.uidnext - 1) if done else batch[-1]
            waiting = len(uids) - start - len(batch)
            yield batch, Cursor(uidvalidity, last, selected.uidnext, selected.highestmodseq, waiting)

    try:
        pipeline.run(folder, uidvalidity, batches(), imap)
    finally:
        if imap.connected:
            imap.unselect()  # a kept-open connection must see the folder's next STATUS afresh
    if not uids:
        final = Cursor(uidvalidity, selected.uidnext - 1, selected.uidnext, selected.highestmodseq)
        with transaction(pipeline.sessions) as session:
            pipeline.save_cursor(session, folder, final, seen=0, logged=0)


# ---- the batch pipeline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int
    last_uid: int
    uidnext: int | None = None
    highestmodseq: int | None = None
    waiting: int = 0  # messages above this cursor that the poll found (models.health: "messages waiting")


class Action(enum.Enum):
    """What the sync does with one message of a batch."""

    SKIP = "skip"
    DUPLICATE = "duplicate"
    LOG = "log"
    QUARANTINE = "quarantine"
    GONE = "gone"  # expunged between SEARCH and FETCH: nothing to account for


@dataclass
class _Message:
    """The sync's working record of one message while its batch is decided, fetched, parsed and recorded.

    Mutable on purpose: each step fills in what it learns. It never leaves this module; what it hands on is
    the vocabulary of models.messages (an `EmailToRecord`, a quarantine reason).
    """

    uid: int
    size: int = 0
    header: bytes = b""
    headers: MessageHeaders | None = None
    participants: Participants | None = None
    action: Action = Action.GONE
    skip: SkipReason | None = None
    placement: Placement | None = None
    content_key: str | None = None  # known from the headers when there is a Message-ID
    activity_id: int | None = None  # the activity a duplicate is a copy of
    reason: str | None = None  # why it is quarantined
    raw: bytes | None = None  # kept until its parse succeeded, for the quarantine
    parse: Future[ParseResult] | None = None
    body: MessageBody | None = None


@dataclass
class _Batch:
    folder: str
    uidvalidity: int
    cursor: Cursor
    messages: list[_Message]
    contacts: dict[str, tuple[int, int | None]]  # the batch's one lookup of the addresses it links
    checked_keys: set[str]  # content keys looked up and found not logged
    making: set[str] = field(default_factory=set)  # addresses its placements create
    # a batch of earlier mail fetched again (daemon.relink): UID -> its rows in the index of skipped mail
    relink: dict[int, list[int]] | None = None


@dataclass
class _Counts:
    new: int = 0
    logged: int = 0
    contacts_created: int = 0
    skipped: int = 0
    quarantined: int = 0
    duplicates: int = 0
    retried: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str | None) -> None:
        self.skipped += 1
        key = reason or "skipped"
        self.skip_reasons[key] = self.skip_reasons.get(key, 0) + 1

    def quarantine(self, reason: str) -> None:
        self.quarantined += 1
        key = reason.split(":", 1)[0]
        self.quarantine_reasons[key] = self.quarantine_reasons.get(key, 0) + 1


class Pipeline:
    """Decide, fetch, parse and record batches of one mailbox's messages (from IMAP or an mbox)."""

    def __init__(
        self,
        mailbox: MailboxSettings,
        sessions: sessionmaker[Session],
        *,
        matching: MatchingSettings,
        team: Team,
        parser: ParserPool,
        now_fn: Callable[[], datetime] = utcnow,
        stop: threading.Event | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.sessions = sessions
        self.matching = matching
        self.team = team
        self.parser = parser
        self.now_fn = now_fn
        self.stop = stop
        self.counts = _Counts()
        self._rules: MatchRules | None = None
        # contacts made by this run's committed batches, and addresses earlier uncommitted batches will make:
        # later batches link them without looking them up again
        self._made: dict[str, tuple[int, int | None]] = {}
        self._making: set[str] = set()
        self._logging: set[str] = set()  # Message-IDs of this run's logged mail: replies to it follow it
        self._late = False  # earlier mail fetched again (relink): deal rules as of each message's date

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def result(self) -> SyncResult:
        c = self.counts
        return SyncResult(
            mailbox=self.mailbox.name, new=c.new, logged=c.logged, contacts_created=c.contacts_created,
            skipped=c.skipped, quarantined=c.quarantined, duplicates=c.duplicates, retried=c.retried,
            skip_reasons=dict(c.skip_reasons), quarantine_reasons=dict(c.quarantine_reasons),
        )  # fmt: skip

    def rules(self) -> MatchRules:
        # built on the first batch only: a poll with nothing new never reads the users table
        if self._rules is None:
            with self.sessions() as session:
                users = list(session.scalars(select(User.email)))
            self._rules = build_rules(self.matching, self.team, users)
        return self._rules

    def run(
        self,
        folder: str,
        uidvalidity: int,
        batches: Iterator[tuple[list[int], Cursor]],
        source: MessageSource,
        *,
        committed: Callable[[Cursor], None] | None = None,
    ) -> None:
        """Process a folder's batches in order; batch k+1 is fetched and decided while batch k is parsed.
        `committed` is called with each batch's cursor once the batch is committed."""
        pending: _Batch | None = None
        for uids, cursor in batches:
            if self.stopping:
                break
            try:
                batch = self.prepare(folder, uidvalidity, uids, source, cursor)
            except Exception:
                # the server went away while fetching the next batch: the one already fetched still commits
                if pending is not None:
                    self._commit_before_failing(pending, committed)
                raise
            if pending is not None:
                self.commit(pending)
                if committed is not None:
                    committed(pending.cursor)
            pending = batch
        if pending is not None:
            self.commit(pending)
            if committed is not None:
                committed(pending.cursor)
        if self.stopping:
            log.info("%s/%s: stopping after a committed batch", self.mailbox.name, folder)

    def _commit_before_failing(self, batch: _Batch, committed: Callable[[Cursor], None] | None) -> None:
        try:
            self.commit(batch)
        except Exception:
            log.warning("%s/%s: the fetched batch could not be committed either", self.mailbox.name,
                        batch.folder, exc_info=True)  # fmt: skip
            return
        if committed is not None:
            committed(batch.cursor)

    # -- steps 1-3 --------------------------------------------------------------------------------------

    def prepare(
        self, folder: str, uidvalidity: int, uids: Sequence[int], source: MessageSource, cursor: Cursor
    ) -> _Batch:
        """Fetch the headers, decide, fetch the bodies to log and hand them to the parser."""
        limits = self.matching
        messages = {uid: _Message(uid) for uid in uids}
        readable: list[_Message] = []
        for fetched in source.fetch_headers(uids, limits.max_header_bytes):
            message = messages.get(fetched.uid)
            if message is None:
                continue
            message.size, message.header = fetched.size, fetched.data
            if not fetched.data.strip():
                message.action = Action.QUARANTINE
                message.reason = QuarantineReason.EMPTY_FETCH.because("the server returned no header")
                continue
            readable.append(message)
        # the header blocks are read by the parser processes too, ahead of the bodies they are parsing
        headers = wait_for(
            self.parser.submit_headers([m.header for m in readable]), self.stop, grace=STOP_GRACE_SECONDS
        )
        for message, result in zip(readable, headers, strict=True):
            if isinstance(result, ParseFailure):
                message.action, message.reason = Action.QUARANTINE, result.reason
            else:
                message.headers, message.action = result, Action.SKIP
        batch = _Batch(folder, uidvalidity, cursor, list(messages.values()), {}, set())
        self._decide(batch)

        to_fetch: list[_Message] = []
        for message in batch.messages:
            if message.action != Action.LOG:
                continue
            if message.size > limits.max_message_bytes:
                message.body = MessageBody.headers_only()  # judged by the size the server reports
            else:
                to_fetch.append(message)
        for group in _groups_by_size(to_fetch, FETCH_GROUP_BYTES):
            self._throttle(batch)
            by_uid = {m.uid: m for m in group}
            empty: list[_Message] = []
            for fetched in source.fetch_messages([m.uid for m in group]):
                message = by_uid.pop(fetched.uid, None)
                if message is None:
                    continue
                if not fetched.data:
                    empty.append(message)
                    continue
                message.raw = fetched.data
                message.parse = self.parser.submit(fetched.data)
            for message in by_uid.values():
                message.action = Action.GONE  # expunged between the header and the body fetch
            if empty:
                # deleted by another client meanwhile, or listed by a server that cannot deliver it
                present = source.still_present([m.uid for m in empty])
                for message in empty:
                    if message.uid in present:
                        message.action, message.raw = Action.QUARANTINE, message.header
                        message.reason = QuarantineReason.EMPTY_FETCH.because(
                            "the server listed the message but returned no content for it"
                        )
                    else:
                        message.action = Action.GONE
        return batch

    def _decide(self, batch: _Batch) -> None:
        """Header-only decisions for a batch, with one lookup of known contacts and logged messages."""
        rules = self.rules()
        readable = [m for m in batch.messages if m.headers is not None and m.action == Action.SKIP]
        for message in readable:
            assert message.headers is not None
            message.participants = read_participants(message.headers, rules)
            if message.headers.message_id:
                message.content_key = content_key(message.headers)
        wanted = {a for m in readable if m.participants for a in m.participants.lookup}
        keys = {m.content_key for m in readable if m.content_key}
        with self.sessions() as session:
            batch.contacts = contact_ids_by_email(session, wanted - self._made.keys() - self._making)
            logged = activity_ids_by_content_key(session, keys)
        batch.checked_keys = keys - logged.keys()
        known = batch.contacts.keys() | self._made.keys()
        for message in readable:
            assert message.participants is not None
            if message.content_key is not None and message.content_key in logged:
                message.action, message.activity_id = Action.DUPLICATE, logged[message.content_key]
                continue
            verdict = decide(message.participants, known, self._making)
            if isinstance(verdict, Placement):
                self._place(batch, message, verdict)
            else:
                message.action, message.skip = Action.SKIP, verdict
        self._second_look(batch)

    def _place(self, batch: _Batch, message: _Message, placement: Placement) -> None:
        message.action, message.placement = Action.LOG, placement
        if message.headers is not None and message.headers.message_id:
            self._logging.add(message.headers.message_id)
        # later messages of this batch, and later batches, link these contacts (or make them too)
        batch.making.update(c.email for c in placement.create)
        self._making.update(batch.making)

    def _second_look(self, batch: _Batch) -> None:
        """Mail no contact makes loggable: the company and thread rules (daemon.matching.second_look), with
        one lookup each for the whole batch, made only when such mail is in it."""
        candidates = [
            m
            for m in batch.messages
            if m.skip == SkipReason.NO_CONTACT
            and m.participants is not None
            and (m.participants.company_lookup or m.participants.thread)
        ]
        if not candidates:
            return
        domains = {d for m in candidates if m.participants for d in m.participants.company_lookup}
        thread_ids = {t for m in candidates if m.participants for t in m.participants.thread}
        with self.sessions() as session:
            companies = company_ids_by_domain(session, domains).keys() if domains else set()
            threads = threads_on_open_deals(session, thread_ids) if thread_ids else set()
        threads = {*threads, *(t for t in thread_ids if t in self._logging)}
        for message in candidates:
            assert message.participants is not None
            placement = second_look(message.participants, companies, threads)
            if placement is not None:
                message.skip = None
                self._place(batch, message, placement)

    def _place_bounces(self, batch: _Batch) -> None:
        """Delivery failure reports, their bodies read: filed on the contacts whose address failed
        (daemon.matching.place_bounce, one lookup for the batch), else skipped."""
        bounces = [m for m in batch.messages if m.action == Action.LOG and m.placement and m.placement.bounce]
        if not bounces:
            return
        failed = {m.uid: m.body.failed_recipients if m.body else () for m in bounces}
        wanted = {a for f in failed.values() for a in bounce_lookup(f)}
        with self.sessions() as session:
            batch.contacts.update(contact_ids_by_email(session, wanted - batch.contacts.keys()))
        known = batch.contacts.keys() | self._made.keys()
        for message in bounces:
            assert message.placement is not None
            verdict = place_bounce(message.placement, failed[message.uid], known)
            if isinstance(verdict, Placement):
                message.placement = verdict
            else:
                message.action, message.skip, message.placement = Action.SKIP, verdict, None

    def _throttle(self, batch: _Batch) -> None:
        """Wait while the raw bytes of parses in flight exceed IN_FLIGHT_BYTES (memory stays bounded)."""
        while True:
            in_flight = [m for m in batch.messages if m.parse is not None and not m.parse.done()]
            if sum(len(m.raw or b"") for m in in_flight) <= IN_FLIGHT_BYTES:
                return
            wait_for(
                [m.parse for m in in_flight[:1] if m.parse is not None], self.stop, grace=STOP_GRACE_SECONDS
            )

    # -- step 4 ---------------------------------------------------------------------------------------------

    def commit(self, batch: _Batch) -> None:
        """Collect the batch's parses and write it in one transaction with the folder cursor."""
        parsing = [m for m in batch.messages if m.parse is not None]
        results = wait_for(
            [m.parse for m in parsing if m.parse is not None], self.stop, grace=STOP_GRACE_SECONDS
        )
        for message, result in zip(parsing, results, strict=True):
            message.parse = None
            if isinstance(result, ParseFailure):
                message.action, message.reason = Action.QUARANTINE, result.reason
            else:
                message.body, message.raw = result, None
        self._place_bounces(batch)
        logged = self._write(batch)
        self.counts.new += sum(1 for m in batch.messages if m.action != Action.GONE)
        log.debug("%s/%s: batch of %d up to uid %d, %d logged", self.mailbox.name, batch.folder,
                  len(batch.messages), batch.cursor.last_uid, logged)  # fmt: skip

    def _write(self, batch: _Batch) -> int:
        """Write a batch in one transaction: SeenMessage rows, sightings, activities, quarantine and cursor.

        The messages to log are recorded together (a fixed number of statements per batch) inside one
        savepoint; if the database refuses one of them, that savepoint is rolled back and they are recorded
        one at a time, each in its own savepoint, so that only the failing message goes to quarantine."""
        now = self.now_fn()
        ref = self._refs(batch)
        with transaction(self.sessions) as session:
            users = {user.email: user for user in session.scalars(select(User))}
            owner = users.get(self.mailbox.owner or "")
            skipped = [m for m in batch.messages if m.action == Action.SKIP]
            duplicates = [m for m in batch.messages if m.action == Action.DUPLICATE]
            add_sightings(session, [(m.activity_id, ref(m)) for m in duplicates if m.activity_id], now=now)
            mark_seen(
                session,
                [SeenRow(ref(m), Outcome.SKIPPED, m.content_key) for m in skipped]
                + [SeenRow(ref(m), Outcome.DUPLICATE, m.content_key, m.activity_id) for m in duplicates],
                now=now,
            )
            for message in skipped:
                self.counts.skip(message.skip)
            self.counts.duplicates += len(duplicates)
            self.counts.logged += len(duplicates)
            to_log = [m for m in batch.messages if m.action == Action.LOG]
            contacts = {**batch.contacts, **self._made}
            outcomes = self._record(session, to_log, ref, owner, users, contacts, batch.checked_keys, now)
            logged = 0
            for message, outcome in zip(to_log, outcomes, strict=True):
                if outcome is not None:
                    logged += self._count(message, outcome)
                    message.activity_id = outcome.activity_id
            for message in batch.messages:
                if message.action == Action.QUARANTINE:
                    self._quarantine(session, message, ref(message), now)
            if batch.relink is not None:
                self._settle(session, batch, ref, now)
            else:
                seen = sum(1 for m in batch.messages if m.action != Action.GONE)
                self.save_cursor(session, batch.folder, batch.cursor, seen=seen, logged=logged)
                self._index(session, batch, [m for m in batch.messages if m.action == Action.SKIP], now)
        self._making.difference_update(batch.making)
        return logged

    def _index(self, session: Session, batch: _Batch, skipped: Sequence[_Message], now: datetime) -> None:
        """Skipped mail with outside participants goes to the index of earlier mail (models.history), to be
        logged if they become contacts. An mbox is not indexed: its file cannot be fetched again by UID."""
        if batch.folder.startswith("mbox:"):
            return
        rows = [
            Skipped(m.uid, m.content_key, (m.headers.date if m.headers else None) or now, addresses)
            for m in skipped
            if m.participants is not None and (addresses := _indexed_addresses(m, m.participants))
        ]
        index_skipped(session, self.mailbox.name, batch.folder, batch.uidvalidity, rows)

    def _settle(
        self, session: Session, batch: _Batch, ref: Callable[[_Message], MessageRef], now: datetime
    ) -> None:
        """A relinked batch: logged, duplicate and quarantined messages leave the index, vanished ones are
        marked gone, still skipped ones stay; their SeenMessage rows say what became of them."""
        assert batch.relink is not None
        done: list[int] = []
        gone: list[int] = []
        seen: list[SeenRow] = []
        for message in batch.messages:
            rows = batch.relink.get(message.uid, [])
            if message.action == Action.GONE:
                gone.extend(rows)
            elif message.action != Action.SKIP:
                done.extend(rows)
                if message.action in (Action.LOG, Action.DUPLICATE) and message.activity_id is not None:
                    outcome = Outcome.LOGGED if message.action == Action.LOG else Outcome.DUPLICATE
                    seen.append(SeenRow(ref(message), outcome, message.content_key, message.activity_id))
        mark_seen(session, seen, now=now, replace=True)
        settle_history(session, done=done, gone=gone)

    def relink(
        self, folder: str, uidvalidity: int, uids: dict[int, list[int]], source: MessageSource
    ) -> None:
        """Earlier mail fetched again by UID (UID -> its rows in the index) and run through the pipeline like
        new mail, batch by batch; the folder's cursor stays where it is."""
        ordered = sorted(uids)
        size = self.matching.batch_size
        for start in range(0, len(ordered), size):
            if self.stopping:
                break
            chunk = ordered[start : start + size]
            self._late = True
            batch = self.prepare(folder, uidvalidity, chunk, source, Cursor(uidvalidity, 0))
            batch.relink = {uid: uids[uid] for uid in chunk}
            self.commit(batch)

    def _refs(self, batch: _Batch) -> Callable[[_Message], MessageRef]:
        name = self.mailbox.name
        return lambda m: MessageRef(name, batch.folder, batch.uidvalidity, m.uid)

    def _record(
        self,
        session: Session,
        messages: Sequence[_Message],
        ref: Callable[[_Message], MessageRef],
        owner: User | None,
        users: dict[str, User],
        contacts: dict[str, tuple[int, int | None]],
        checked_keys: set[str],
        now: datetime,
    ) -> list[RecordOutcome | None]:
        """Record messages together; None for a message that failed and is marked for quarantine."""
        if not messages:
            return []
        batch = [EmailToRecord(self._email(m), m.placement, ref(m)) for m in messages if m.placement]
        try:
            with session.begin_nested():
                recorded = record_emails(
                    session,
                    batch,
                    now=now,
                    owner=owner,
                    contacts=contacts,
                    users=users,
                    checked_keys=checked_keys,
                    deals_as_of_sent=self._late,
                )
            self._made.update(recorded.contacts)
            return list(recorded.outcomes)
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError | DataError):
                raise  # the database itself is in trouble: fail the batch, the mailbox backs off
            log.info(
                "%s: a batch of %d messages failed to record (%s); recording them one by one",
                self.mailbox.name, len(messages), _describe(exc),
            )  # fmt: skip
        outcomes: list[RecordOutcome | None] = []
        for message, item in zip(messages, batch, strict=True):
            try:
                with session.begin_nested():
                    one = record_emails(
                        session, [item], now=now, owner=owner, contacts=contacts, users=users,
                        deals_as_of_sent=self._late,
                    )  # fmt: skip
                self._made.update(one.contacts)
                contacts.update(one.contacts)
                outcomes.append(one.outcomes[0])
            except Exception as exc:
                if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError | DataError):
                    raise
                log.debug("cannot record %s uid %d", self.mailbox.name, message.uid, exc_info=True)
                message.action = Action.QUARANTINE
                message.reason = QuarantineReason.RECORD_ERROR.because(_describe(exc))
                outcomes.append(None)
        return outcomes

    @staticmethod
    def _email(message: _Message) -> Email:
        assert message.headers is not None
        return assemble(message.headers, message.body or MessageBody.headers_only())

    def _count(self, message: _Message, outcome: RecordOutcome) -> int:
        """Count one recorded message; 1 when it became a new activity."""
        self.counts.contacts_created += outcome.contacts_created
        if outcome.outcome == Outcome.SKIPPED:  # a reply into a thread that turned out to be on no deal
            message.action, message.skip = Action.SKIP, SkipReason.NO_CONTACT
            self.counts.skip(message.skip)
            return 0
        if outcome.outcome == Outcome.QUARANTINED:
            message.action, message.reason = Action.QUARANTINE, outcome.reason or "unknown"
            return 0
        self.counts.logged += 1
        if outcome.outcome == Outcome.DUPLICATE:
            self.counts.duplicates += 1
            return 0
        return 1

    def _quarantine(self, session: Session, message: _Message, ref: MessageRef, now: datetime) -> None:
        reason = message.reason or "unknown"
        log.warning("%s/%s uid %d quarantined: %s", ref.mailbox, ref.folder, ref.uid, reason)
        message_id = message.headers.message_id if message.headers else None
        raw = message.raw if message.raw is not None else message.header
        quarantine_message(session, ref, raw=raw, reason=reason, message_id=message_id, now=now)
        self.counts.quarantine(reason)

    def save_cursor(self, session: Session, folder: str, cursor: Cursor, *, seen: int, logged: int) -> None:
        now = self.now_fn()
        state = _folder_state(session, self.mailbox.name, folder)
        if state.uidvalidity != cursor.uidvalidity:
            state.last_uid = 0
        state.uidvalidity = cursor.uidvalidity
        state.last_uid = max(state.last_uid or 0, cursor.last_uid)
        state.uidnext = cursor.uidnext
        state.highestmodseq = cursor.highestmodseq
        state.messages_waiting = cursor.waiting
        state.messages_seen = (state.messages_seen or 0) + seen
        state.messages_logged = (state.messages_logged or 0) + logged
        state.last_success_at = now
        state.last_error = None

    # -- quarantine retries ---------------------------------------------------------------------------------

    def retry_quarantine(
        self, due: Sequence[PendingQuarantine], imap: MailboxConnections | None = None
    ) -> None:
        """Run due quarantined messages of this mailbox through again: from their stored raw bytes, or
        fetched again from the folder when the server had returned nothing (an empty fetch)."""
        for pending in due:
            if self.stopping:
                return
            raw = self._retry_raw(pending, imap)
            with transaction(self.sessions) as session:
                reason = self._retry(session, pending.ref, raw) if raw else pending.reason
                if reason is not None:
                    quarantine_message(session, pending.ref, raw=raw or b"", reason=reason,
                                       message_id=pending.message_id, now=self.now_fn())  # fmt: skip

    def _retry(self, session: Session, ref: MessageRef, raw: bytes) -> str | None:
        """One quarantined message through the whole pipeline; None when it went through, else the reason."""
        now = self.now_fn()
        message = _Message(ref.uid, size=len(raw), raw=raw, action=Action.SKIP)
        message.headers = parse_headers(raw, self.matching.max_header_bytes)
        participants = read_participants(message.headers, self.rules())
        contacts = {**contact_ids_by_email(session, participants.lookup), **self._made}
        verdict = decide(participants, contacts.keys())
        outcome: RecordOutcome | None
        if isinstance(verdict, Placement):
            result = self.parser.parse(raw, self.stop)
            if isinstance(result, ParseFailure):
                return result.reason
            message.body, message.placement = result, verdict
            if verdict.bounce:
                failed = result.failed_recipients
                contacts.update(contact_ids_by_email(session, bounce_lookup(failed)))
                placed = place_bounce(verdict, failed, contacts.keys())
                if not isinstance(placed, Placement):
                    self._retry_skipped(session, ref, message, placed, now)
                    return None
                message.placement = placed
            users = {user.email: user for user in session.scalars(select(User))}
            owner = users.get(self.mailbox.owner or "")
            outcome = self._record(session, [message], lambda _: ref, owner, users, contacts, set(), now)[0]
            if outcome is None or outcome.outcome == Outcome.QUARANTINED:
                return (message.reason if outcome is None else outcome.reason) or "unknown"
        else:
            outcome = RecordOutcome(Outcome.SKIPPED, reason=verdict.value)
        resolve_quarantine(session, ref, now=now)
        key = self._email(message).content_key
        mark_seen(session, [SeenRow(ref, outcome.outcome, key, outcome.activity_id)], now=now, replace=True)
        # a retry is not new mail: it is counted apart from this run's new messages
        self.counts.contacts_created += outcome.contacts_created
        self.counts.retried += 1
        return None

    def _retry_skipped(
        self, session: Session, ref: MessageRef, message: _Message, reason: SkipReason, now: datetime
    ) -> None:
        resolve_quarantine(session, ref, now=now)
        key = self._email(message).content_key
        mark_seen(session, [SeenRow(ref, Outcome.SKIPPED, key)], now=now, replace=True)
        self.counts.retried += 1
        log.debug("%s uid %d: skipped on retry (%s)", ref.mailbox, ref.uid, reason.value)

    def _retry_raw(self, pending: PendingQuarantine, imap: MailboxConnections | None) -> bytes | None:
        with self.sessions() as session:
            raw = quarantined_raw(session, pending.ref)
        if raw and not pending.reason.startswith(QuarantineReason.EMPTY_FETCH.value):
            return raw
        if imap is None or pending.ref.folder.startswith("mbox:"):
            return raw or None
        try:
            connection = imap.for_folder(pending.ref.folder)
            if connection.select_readonly(pending.ref.folder).uidvalidity != pending.ref.uidvalidity:
                return None
            fetched = connection.fetch_messages([pending.ref.uid])
        except ImapError as exc:
            log.info("%s: cannot fetch quarantined uid %d again: %s", self.mailbox.name, pending.ref.uid, exc)
            return None
        return fetched[0].data if fetched and fetched[0].data else None


def _indexed_addresses(message: _Message, participants: Participants) -> tuple[str, ...]:
    """Whom a skipped message waits for: a bounce its failed recipients, other mail its outside people."""
    if participants.bounce:
        return bounce_lookup(message.body.failed_recipients if message.body else ())
    return participants.lookup


def _groups_by_size(messages: Sequence[_Message], max_bytes: int) -> Iterator[list[_Message]]:
    """Messages in UID FETCH groups of at most max_bytes (by the sizes the server reported), at least one."""
    group: list[_Message] = []
    size = 0
    for message in messages:
        if group and size + message.size > max_bytes:
            yield group
            group, size = [], 0
        group.append(message)
        size += message.size
    if group:
        yield group


# ---- state rows -----------------------------------------------------------------------------------------


def _folder_state(session: Session, mailbox: str, folder: str) -> FolderSyncState:
    state = session.scalar(
        select(FolderSyncState).where(FolderSyncState.mailbox == mailbox, FolderSyncState.folder == folder)
    )
    if state is not None:
        return state
    state = FolderSyncState(mailbox=mailbox, folder=folder, last_uid=0, messages_seen=0, messages_logged=0)
    try:
        with session.begin_nested():
            session.add(state)
            session.flush()
    except IntegrityError:
        found = session.scalar(
            select(FolderSyncState).where(
                FolderSyncState.mailbox == mailbox, FolderSyncState.folder == folder
            )
        )
        if found is None:
            raise
        return found
    return state


def _record_mailbox_status(
    sessions: sessionmaker[Session],
    mailbox: str,
    *,
    attempt_at: datetime,
    now: datetime,
    error: str | None,
    auth: bool,
    rng: random.Random | None,
) -> None:
    """The mailbox's health after a poll, with its next attempt time after a failure (Core statements)."""
    with transaction(sessions) as session:
        failures = session.scalar(select(_STATUS.c.consecutive_failures).where(_STATUS.c.mailbox == mailbox))
        if failures is None:
            insert_status = dialect_insert(session)(_STATUS).on_conflict_do_nothing(
                index_elements=["mailbox"]
            )
            session.execute(insert_status, [{"mailbox": mailbox, "consecutive_failures": 0}])
            failures = 0
        values: dict[str, Any] = {"last_attempt_at": attempt_at}
        if error is None:
            values.update(last_success_at=now, last_error=None, consecutive_failures=0, next_attempt_at=None)
        else:
            failures += 1
            values.update(
                consecutive_failures=failures,
                last_error=error[:2000],
                last_error_at=now,
                next_attempt_at=now + timedelta(seconds=next_backoff(failures, auth=auth, rng=rng)),
            )
        session.execute(update(_STATUS).where(_STATUS.c.mailbox == mailbox).values(**values))


def _record_folder_error(pipeline: Pipeline, folder: str, message: str) -> None:
    try:
        with transaction(pipeline.sessions) as session:
            state = _folder_state(session, pipeline.mailbox.name, folder)
            state.last_error = message[:2000]
            state.last_error_at = pipeline.now_fn()
    except SQLAlchemyError as exc:
        log.error(
            "%s/%s: cannot record the folder error: %s", pipeline.mailbox.name, folder, _first_line(exc)
        )


def _describe(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _scrub(message: str, mailbox: MailboxSettings) -> str:
    """Error text goes to the database and logs: make sure the password never does."""
    secret = mailbox.password.reveal()
    return message.replace(secret, "***") if secret else message
