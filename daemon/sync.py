"""One mailbox's sync: the per-folder state machine that files new mail exactly once.

`sync_mailbox` runs one pass over a mailbox: per folder one STATUS round trip decides whether there is
anything to do (a folder with nothing new costs nothing more). New UIDs are handled in batches. Each batch
gets its headers first (BODY.PEEK[HEADER]) and is decided from them alone, with one bulk lookup of the
addresses that are contacts and of the messages already logged: most mail (internal, newsletters, unknown
senders) never has its body fetched. The few messages worth logging are fetched (BODY.PEEK[]), parsed and
recorded together through models.email_log.record_emails (a fixed number of statements per batch, since on
PostgreSQL each one is a round trip); a batch's activities, its SeenMessage rows and the folder cursor commit
in one transaction, so a kill at any instant loses and duplicates nothing. A message that cannot be parsed or
recorded is quarantined with its raw bytes and retried on later runs; a mailbox that fails (auth, network,
timeout) records its error and backs off, and the result says so instead of raising.

The same batch pipeline backfills mbox files (daemon.mbox). The mailbox is never changed: folders are opened
read-only and bodies are fetched with PEEK.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import ImapAuthError, ImapError, ImapSession, ImapTarget
from daemon.matching import MatchDecision, MatchRules, build_rules, match_message
from daemon.parse import (
    MessageHeaders,
    ParsedMessage,
    content_key_for,
    load_freemail_domains,
    parse_headers,
    parse_message,
)
from models.db import transaction
from models.email_log import (
    OUTCOME_DUPLICATE,
    OUTCOME_SKIPPED,
    ContactCandidate,
    EmailAttachmentData,
    EmailData,
    EmailPlacement,
    EmailToRecord,
    MessageRef,
    PendingQuarantine,
    RecordOutcome,
    SeenRow,
    activity_ids_by_content_key,
    add_sightings,
    known_contact_emails,
    mark_seen,
    pending_quarantine,
    quarantine_message,
    quarantined_raw,
    record_email,
    record_emails,
    resolve_quarantine,
)
from models.schema import FolderSyncState, MailboxStatus, User
from settings import MailboxSettings, Settings

log = logging.getLogger("threadline.sync")

# Backoff of a failing mailbox: 30 s, 1 min, 2 min, ... capped at 30 min; a refused login starts at 5 min
# and caps at 6 h, because hammering a wrong password gets accounts locked.
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_CAP_SECONDS = 30 * 60.0
AUTH_BACKOFF_BASE_SECONDS = 5 * 60.0
AUTH_BACKOFF_CAP_SECONDS = 6 * 3600.0


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
            "error": self.error,
        }

    def summary(self) -> str:
        line = (
            f"{self.mailbox}: {self.new} new, {self.logged} logged, "
            f"{self.contacts_created} contacts created, {self.skipped} skipped, "
            f"{self.quarantined} quarantined in {self.seconds:.1f} s"
        )
        return f"{line}; error: {self.error}" if self.error else line


class HeaderLike(Protocol):
    @property
    def uid(self) -> int: ...

    @property
    def header(self) -> bytes: ...


class RawLike(Protocol):
    @property
    def uid(self) -> int: ...

    @property
    def raw(self) -> bytes: ...


class MessageSource(Protocol):
    """Where a batch's messages come from: an IMAP folder (ImapSession) or an mbox file."""

    def fetch_headers(self, uids: Sequence[int]) -> Sequence[HeaderLike]: ...

    def fetch_messages(self, uids: Sequence[int]) -> Sequence[RawLike]: ...


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


def load_rules(session: Session, settings: Settings) -> MatchRules:
    """The matching rules: team domains, every mailbox's and user's address are internal."""
    internal: list[str] = [u for u in session.scalars(select(User.email))]
    for mailbox in settings.mailboxes:
        internal.extend(a for a in (mailbox.address, mailbox.owner, mailbox.username) if a and "@" in a)
    return build_rules(
        team_domains=settings.team.domains,
        internal_addresses=internal,
        create_contacts=settings.matching.create_contacts,
        ignore=settings.matching.ignore,
        freemail=load_freemail_domains(settings.matching.freemail_domains),
    )


# ---- one mailbox ----------------------------------------------------------------------------------------


def sync_mailbox(
    settings: Settings,
    mailbox: MailboxSettings,
    sessions: sessionmaker[Session],
    *,
    now_fn: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None,
    folders: Sequence[str] | None = None,
    imap: ImapSession | None = None,
    imap_factory: Callable[[ImapTarget], ImapSession] = ImapSession,
    rng: random.Random | None = None,
) -> SyncResult:
    """One pass over a mailbox: every folder's new mail, then due quarantine retries.

    Never raises for IMAP, parsing or database trouble: the result's `error` says what went wrong, and the
    mailbox's MailboxStatus records it with the time of the next attempt (backoff). Pass `imap` to reuse a
    connection across polls (it is connected if needed and left open; a dropped one reconnects next time);
    otherwise one is opened with `imap_factory` and closed at the end.
    """
    started = time.monotonic()
    attempt_at = now_fn()
    pipeline = Pipeline(settings, mailbox, sessions, now_fn=now_fn)
    errors: list[str] = []
    auth_failed = False
    previous: MailboxStatus | None = None
    try:
        # one read for everything a poll with nothing new needs from the database
        with sessions() as session:
            states = {
                row.folder: (row.uidvalidity, row.last_uid)
                for row in session.scalars(
                    select(FolderSyncState).where(FolderSyncState.mailbox == mailbox.name)
                )
            }
            previous = session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == mailbox.name))
            due = pending_quarantine(session, mailbox.name, now=attempt_at)
        connection = imap if imap is not None else imap_factory(mailbox_target(mailbox))
        try:
            connection.connect()
            for folder in folders or mailbox.folders or default_folders(connection, mailbox):
                if stop is not None and stop.is_set():
                    break
                try:
                    sync_folder(pipeline, connection, folder, stop=stop, known=states.get(folder))
                except ImapError as exc:
                    _SENT_FOLDERS.pop(_connection_key(mailbox), None)  # the folder list may have changed
                    message = _scrub(str(exc), mailbox)
                    errors.append(f"folder {folder!r}: {message}")
                    _record_folder_error(pipeline, folder, message)
        finally:
            if imap is None:
                connection.close()
        if due and not (stop is not None and stop.is_set()):
            pipeline.retry_quarantine(due)
    except ImapAuthError as exc:
        auth_failed = True
        errors.append(_scrub(str(exc), mailbox))
    except ImapError as exc:
        errors.append(_scrub(str(exc), mailbox))
    except SQLAlchemyError as exc:
        errors.append(f"database error: {_first_line(exc)}")
        log.exception("%s: database error during sync", mailbox.name)
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
    return replace(result, seconds=time.monotonic() - started, error=error, auth_failed=auth_failed)


# The folder list of a mailbox (INBOX + its Sent folder) costs a LIST round trip; it rarely changes, so it is
# remembered per server account for the life of the process and forgotten when a folder fails.
_SENT_FOLDERS: dict[tuple[str, str, int, str], list[str]] = {}
# A healthy mailbox's status row is rewritten at most this often when polls find nothing new.
_STATUS_REFRESH = timedelta(seconds=60)


def default_folders(imap: ImapSession, mailbox: MailboxSettings | None = None) -> list[str]:
    """INBOX plus the folder the server marks \\Sent (or names like one)."""
    key = _connection_key(mailbox) if mailbox is not None else None
    if key is not None and key in _SENT_FOLDERS:
        return _SENT_FOLDERS[key]
    sent = imap.sent_folder()
    found = ["INBOX"] if sent is None or sent.upper() == "INBOX" else ["INBOX", sent]
    if key is not None:
        _SENT_FOLDERS[key] = found
    return found


def _connection_key(mailbox: MailboxSettings) -> tuple[str, str, int, str]:
    return (mailbox.name, mailbox.host, mailbox.port, mailbox.username)


def _recently_healthy(status: MailboxStatus | None, now: datetime) -> bool:
    return (
        status is not None
        and status.last_error is None
        and not status.consecutive_failures
        and status.last_success_at is not None
        and now - status.last_success_at < _STATUS_REFRESH
    )


def sync_folder(
    pipeline: Pipeline,
    imap: ImapSession,
    folder: str,
    *,
    stop: threading.Event | None,
    known: tuple[int | None, int] | None = None,
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
    batch_size = pipeline.settings.matching.batch_size
    for start in range(0, len(uids), batch_size):
        batch = uids[start : start + batch_size]
        done = start + batch_size >= len(uids)
        # once every found UID is handled, everything below UIDNEXT is too (expunged mail included)
        cursor = max(batch[-1], selected.uidnext - 1) if done else batch[-1]
        pipeline.process_batch(
            folder, uidvalidity, batch, imap,
            cursor=Cursor(uidvalidity, cursor, selected.uidnext, selected.highestmodseq),
        )  # fmt: skip
        if stop is not None and stop.is_set() and not done:
            log.info("%s/%s: stopping after a committed batch", name, folder)
            return
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


@dataclass
class _Item:
    uid: int
    headers: MessageHeaders | None = None
    decision: MatchDecision | None = None
    content_key: str | None = None  # known from headers when there is a Message-ID
    action: str = "skip"  # skip | duplicate | log | quarantine | gone
    reason: str | None = None
    activity_id: int | None = None
    raw: bytes | None = None
    parsed: ParsedMessage | None = None


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

    def skip(self, reason: str | None) -> None:
        self.skipped += 1
        key = reason or "skipped"
        self.skip_reasons[key] = self.skip_reasons.get(key, 0) + 1


class Pipeline:
    """Decide, fetch, parse and record batches of one mailbox's messages (from IMAP or an mbox)."""

    def __init__(
        self,
        settings: Settings,
        mailbox: MailboxSettings,
        sessions: sessionmaker[Session],
        *,
        now_fn: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.mailbox = mailbox
        self.sessions = sessions
        self.now_fn = now_fn
        self.counts = _Counts()
        self._rules: MatchRules | None = None

    def result(self) -> SyncResult:
        c = self.counts
        return SyncResult(
            mailbox=self.mailbox.name, new=c.new, logged=c.logged, contacts_created=c.contacts_created,
            skipped=c.skipped, quarantined=c.quarantined, duplicates=c.duplicates, retried=c.retried,
            skip_reasons=dict(c.skip_reasons),
        )  # fmt: skip

    def rules(self) -> MatchRules:
        # built on the first batch only: a poll with nothing new never reads the users table
        if self._rules is None:
            with self.sessions() as session:
                self._rules = load_rules(session, self.settings)
        return self._rules

    def process_batch(
        self, folder: str, uidvalidity: int, uids: Sequence[int], source: MessageSource, *, cursor: Cursor
    ) -> None:
        """Decide from headers, fetch and parse what will be logged, then commit it all with the cursor."""
        items = {uid: _Item(uid) for uid in uids}
        for fetched in source.fetch_headers(uids):
            item = items.get(fetched.uid)
            if item is None:
                continue
            try:
                item.headers = parse_headers(fetched.header)
            except Exception as exc:  # parse_headers promises not to raise; the full parse will tell
                log.debug("uid %s: unreadable headers: %s", fetched.uid, exc)
                item.action = "log"
        for item in items.values():
            if item.headers is None and item.action != "log":
                item.action = "gone"  # expunged between SEARCH and FETCH
        self._decide(items.values())

        wanted = [item.uid for item in items.values() if item.action == "log"]
        if wanted:
            for fetched_message in source.fetch_messages(wanted):
                if fetched_message.uid in items:
                    items[fetched_message.uid].raw = fetched_message.raw
        matching = self.settings.matching
        for item in items.values():
            if item.action != "log":
                continue
            if item.raw is None:
                item.action = "gone"
                continue
            try:
                item.parsed = parse_message(
                    item.raw,
                    max_attachment_bytes=matching.max_attachment_bytes,
                    max_message_bytes=matching.max_message_bytes,
                )
            except Exception as exc:
                item.action, item.reason = "quarantine", f"cannot parse: {_describe(exc)}"
                continue
            if item.headers is None or item.decision is None:
                item.headers = item.parsed.headers
                item.decision = match_message(item.headers, self.rules())

        logged = self._commit(folder, uidvalidity, list(items.values()), cursor)
        self.counts.new += sum(1 for item in items.values() if item.action != "gone")
        log.debug("%s/%s: batch of %d up to uid %d, %d logged", self.mailbox.name, folder, len(uids),
                  cursor.last_uid, logged)  # fmt: skip

    def _decide(self, items: Iterable[_Item]) -> None:
        """Header-only decisions for a batch, with one lookup of known contacts and logged messages."""
        rules = self.rules()
        pending = [item for item in items if item.headers is not None and item.action != "log"]
        for item in pending:
            assert item.headers is not None
            item.decision = match_message(item.headers, rules)
            if item.headers.message_id:
                item.content_key = content_key_for(item.headers)
        emails = {p.email for item in pending if item.decision for p in item.decision.external}
        keys = [item.content_key for item in pending if item.content_key]
        with self.sessions() as session:
            known = known_contact_emails(session, emails)
            logged = activity_ids_by_content_key(session, keys)
        for item in pending:
            assert item.decision is not None
            if item.content_key is not None and item.content_key in logged:
                item.action, item.activity_id = "duplicate", logged[item.content_key]
                continue
            plan = item.decision.plan(known)
            if plan.logs:
                item.action = "log"
                # later messages of the batch will find these contacts already made
                known.update(p.email for p in plan.create)
            else:
                item.action, item.reason = "skip", plan.skip_reason

    def _commit(self, folder: str, uidvalidity: int, items: list[_Item], cursor: Cursor) -> int:
        """Write a batch in one transaction: SeenMessage rows, sightings, activities and the folder cursor.

        The messages to log are recorded together (a fixed number of statements per batch) inside one
        savepoint; if the database refuses one of them, that savepoint is rolled back and they are recorded
        one at a time, each in its own savepoint, so that only the failing message goes to quarantine."""
        now = self.now_fn()
        name = self.mailbox.name
        with transaction(self.sessions) as session:
            users = _users(session)
            owner = users.get(self.mailbox.owner or "")
            skipped = [i for i in items if i.action == "skip"]
            duplicates = [i for i in items if i.action == "duplicate"]
            add_sightings(
                session,
                [(i.activity_id, MessageRef(name, folder, uidvalidity, i.uid)) for i in duplicates
                 if i.activity_id is not None],
                now=now,
            )  # fmt: skip
            mark_seen(
                session,
                [SeenRow(MessageRef(name, folder, uidvalidity, i.uid), OUTCOME_SKIPPED, i.content_key)
                 for i in skipped]
                + [SeenRow(MessageRef(name, folder, uidvalidity, i.uid), OUTCOME_DUPLICATE, i.content_key,
                           i.activity_id) for i in duplicates],
                now=now,
            )  # fmt: skip
            for item in skipped:
                self.counts.skip(item.reason)
            self.counts.duplicates += len(duplicates)
            self.counts.logged += len(duplicates)
            to_log = [i for i in items if i.action == "log"]
            refs = [MessageRef(name, folder, uidvalidity, i.uid) for i in to_log]
            outcomes = self._record_batch(session, to_log, refs, owner, now, users)
            logged = sum(self._count(outcome) for outcome in outcomes if outcome is not None)
            for item in items:
                if item.action == "quarantine":
                    self._quarantine(session, item, MessageRef(name, folder, uidvalidity, item.uid), now)
            self.save_cursor(session, folder, cursor, seen=sum(1 for i in items if i.action != "gone"),
                             logged=logged)  # fmt: skip
        return logged

    def _record_batch(
        self,
        session: Session,
        items: Sequence[_Item],
        refs: Sequence[MessageRef],
        owner: User | None,
        now: datetime,
        users: dict[str, User],
    ) -> list[RecordOutcome | None]:
        """Record parsed messages together; None for a message that failed and is marked for quarantine."""
        if not items:
            return []
        batch = []
        for item, ref in zip(items, refs, strict=True):
            assert item.parsed is not None and item.decision is not None
            batch.append(EmailToRecord(email_data(item.parsed), self.placement(item.decision), ref))
        # the batch's header-time lookup already checked these content keys (messages with a Message-ID)
        checked = all(i.content_key is not None and i.content_key == i.parsed.content_key for i in items
                      if i.parsed is not None)  # fmt: skip
        try:
            with session.begin_nested():
                return list(
                    record_emails(
                        session, batch, now=now, owner=owner, users=users, check_existing=not checked
                    )
                )
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError | DataError):
                raise  # the database itself is in trouble: fail the batch, the mailbox backs off
            log.info(
                "%s: a batch of %d messages failed to record (%s); recording them one by one",
                self.mailbox.name, len(items), _describe(exc),
            )  # fmt: skip
        return [
            self._record_outcome(session, item, ref, owner, now, users)
            for item, ref in zip(items, refs, strict=True)
        ]

    def _count(self, outcome: RecordOutcome) -> int:
        """Count one recorded message; 1 when it became a new activity."""
        self.counts.contacts_created += outcome.contacts_created
        if outcome.outcome == OUTCOME_SKIPPED:
            self.counts.skip(outcome.reason)
            return 0
        self.counts.logged += 1
        if outcome.outcome == OUTCOME_DUPLICATE:
            self.counts.duplicates += 1
            return 0
        return 1

    def _record_outcome(
        self,
        session: Session,
        item: _Item,
        ref: MessageRef,
        owner: User | None,
        now: datetime,
        users: dict[str, User] | None = None,
    ) -> RecordOutcome | None:
        """Record one parsed message in a savepoint; a failure due to the message marks it for quarantine."""
        assert item.parsed is not None and item.decision is not None
        try:
            with session.begin_nested():
                return record_email(
                    session,
                    email_data(item.parsed),
                    self.placement(item.decision),
                    ref=ref,
                    now=now,
                    owner=owner,
                    users=users,
                )
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError | DataError):
                raise  # the database itself is in trouble: fail the batch, the mailbox backs off
            log.debug("cannot record %s/%s uid %d", ref.mailbox, ref.folder, ref.uid, exc_info=True)
            item.action, item.reason = "quarantine", f"cannot record: {_describe(exc)}"
            return None

    def _quarantine(self, session: Session, item: _Item, ref: MessageRef, now: datetime) -> None:
        log.warning("%s/%s uid %d quarantined: %s", ref.mailbox, ref.folder, ref.uid, item.reason)
        message_id = item.headers.message_id if item.headers else None
        quarantine_message(
            session, ref, raw=item.raw or b"", reason=item.reason or "unknown", message_id=message_id, now=now
        )
        self.counts.quarantined += 1

    def placement(self, decision: MatchDecision) -> EmailPlacement:
        rules = self.rules()
        creatable = {p.email for p in decision.creatable}
        return EmailPlacement(
            direction=decision.direction,
            candidates=tuple(
                ContactCandidate(
                    email=p.email,
                    name=p.name,
                    may_create=p.email in creatable,
                    company_domain=None if rules.is_freemail(p.domain) else p.domain,
                )
                for p in decision.external
            ),
            author_email=decision.sender if decision.direction == "out" else None,
        )

    def _owner(self, session: Session) -> User | None:
        if not self.mailbox.owner:
            return None
        return session.scalar(select(User).where(User.email == self.mailbox.owner))

    def save_cursor(self, session: Session, folder: str, cursor: Cursor, *, seen: int, logged: int) -> None:
        now = self.now_fn()
        state = _folder_state(session, self.mailbox.name, folder)
        if state.uidvalidity != cursor.uidvalidity:
            state.last_uid = 0
        state.uidvalidity = cursor.uidvalidity
        state.last_uid = max(state.last_uid or 0, cursor.last_uid)
        state.uidnext = cursor.uidnext
        state.highestmodseq = cursor.highestmodseq
        state.messages_seen = (state.messages_seen or 0) + seen
        state.messages_logged = (state.messages_logged or 0) + logged
        state.last_success_at = now
        state.last_error = None

    def retry_quarantine(self, due: Sequence[PendingQuarantine]) -> None:
        """Run due quarantined messages of this mailbox through again, from their stored raw bytes."""
        now = self.now_fn()
        matching = self.settings.matching
        for pending in due:
            ref = pending.ref
            with transaction(self.sessions) as session:
                raw = quarantined_raw(session, ref)
                if not raw:
                    continue
                item = _Item(ref.uid, raw=raw, action="log")
                try:
                    item.parsed = parse_message(
                        raw,
                        max_attachment_bytes=matching.max_attachment_bytes,
                        max_message_bytes=matching.max_message_bytes,
                    )
                    item.headers = item.parsed.headers
                    item.decision = match_message(item.headers, self.rules())
                except Exception as exc:
                    quarantine_message(session, ref, raw=raw, reason=f"cannot parse: {_describe(exc)}",
                                       message_id=pending.message_id, now=now)  # fmt: skip
                    continue
                outcome = self._record_outcome(session, item, ref, self._owner(session), now)
                if outcome is None:
                    quarantine_message(session, ref, raw=raw, reason=item.reason or "unknown",
                                       message_id=pending.message_id, now=now)  # fmt: skip
                    continue
                resolve_quarantine(session, ref, now=now)
                mark_seen(
                    session,
                    [SeenRow(ref, outcome.outcome, item.parsed.content_key, outcome.activity_id)],
                    now=now,
                    replace=True,
                )
                # a retry is not new mail: it is counted apart from this run's new messages
                self.counts.contacts_created += outcome.contacts_created
                self.counts.retried += 1


# ---- parsed message -> what the CRM stores --------------------------------------------------------------


def email_data(parsed: ParsedMessage) -> EmailData:
    h = parsed.headers
    sender = (h.from_ or h.sender)[:1]
    return EmailData(
        content_key=parsed.content_key,
        message_id=h.message_id,
        subject=h.subject,
        sent_at=h.date,
        from_address=_format_address(sender[0].name, sender[0].email) if sender else None,
        to_addresses=tuple(_format_address(a.name, a.email) for a in h.to),
        cc_addresses=tuple(_format_address(a.name, a.email) for a in h.cc),
        in_reply_to=h.in_reply_to,
        references=h.references,
        text=parsed.text,
        html=parsed.html,
        snippet=parsed.snippet,
        attachments=tuple(
            EmailAttachmentData(a.filename, a.content_type, a.size, a.content) for a in parsed.attachments
        ),
        truncated=parsed.truncated,
    )


def _format_address(name: str, email: str) -> str:
    return f"{name} <{email}>" if name else email


# ---- state rows -----------------------------------------------------------------------------------------


def _users(session: Session) -> dict[str, User]:
    return {user.email: user for user in session.scalars(select(User))}


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


def _mailbox_status(session: Session, mailbox: str) -> MailboxStatus:
    status = session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == mailbox))
    if status is not None:
        return status
    status = MailboxStatus(mailbox=mailbox, consecutive_failures=0)
    try:
        with session.begin_nested():
            session.add(status)
            session.flush()
    except IntegrityError:
        found = session.scalar(select(MailboxStatus).where(MailboxStatus.mailbox == mailbox))
        if found is None:
            raise
        return found
    return status


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
    with transaction(sessions) as session:
        status = _mailbox_status(session, mailbox)
        status.last_attempt_at = attempt_at
        if error is None:
            status.last_success_at = now
            status.last_error = None
            status.consecutive_failures = 0
            status.next_attempt_at = None
            return
        failures = (status.consecutive_failures or 0) + 1
        status.consecutive_failures = failures
        status.last_error = error[:2000]
        status.last_error_at = now
        status.next_attempt_at = now + timedelta(seconds=next_backoff(failures, auth=auth, rng=rng))


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
