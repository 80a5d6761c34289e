"""Earlier mail, linked when its people become contacts: the skipped mail of the index fetched again.

`relink_history` takes what to look at (the queue models.contacts fills whenever a contact gains an address
or a company a domain, or an explicit `HistorySelection` from the panel's "Find earlier emails" or
`threadline relink`), finds the indexed messages (models.history), fetches them again by UID from their
mailbox and runs them through the sync's own pipeline (daemon.sync.Pipeline.relink): the same matching rules,
the same recording, the same exactly-once guarantees. Each batch settles its index rows in the transaction
that records it, so a kill at any instant only leaves work for the next run, and two daemons doing it at
once log each message once (the content key is unique; the second one sees a duplicate).

A folder whose UIDVALIDITY changed since a message was indexed is searched again by the message's content
key: the index's rows of the new generation, else a Message-ID search on the server. A message the server
no longer has is marked `gone` in the index and nothing else happens.

The queue is emptied only by a run that went through without an error, so a mailbox that was down is done
on a later run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import ImapError, ImapSession, ImapTarget
from daemon.matching import Team
from daemon.parsing.content_key import content_key
from daemon.parsing.headers import parse_headers
from daemon.sync import MailboxConnections, Pipeline
from daemon.workers import ParserPool, StopRequested
from models.db import transaction
from models.history import (
    HistorySelection,
    IndexedMessage,
    find_history,
    forget_requests,
    indexed_by_content_key,
    pending_requests,
    prune_history,
    settle_history,
)
from settings import MailboxSettings, MatchingSettings

log = logging.getLogger("threadline.relink")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RelinkResult:
    """What one look at earlier mail found and did."""

    requests: int = 0  # queued requests it answered
    found: int = 0  # indexed messages it looked at
    logged: int = 0  # now on the timeline (including those another mailbox had logged already)
    contacts_created: int = 0
    still_skipped: int = 0  # fetched again, and still nobody's (the rules have not changed for them)
    gone: int = 0  # the server no longer has them
    quarantined: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        line = (
            f"{self.found} earlier emails found: {self.logged} logged, {self.still_skipped} still not "
            f"logged, {self.gone} no longer on the server"
        )
        if self.quarantined:
            line += f", {self.quarantined} quarantined"
        return f"{line}; error: {'; '.join(self.errors)}" if self.errors else line


def relink_history(
    mailboxes: Sequence[MailboxSettings],
    sessions: sessionmaker[Session],
    *,
    matching: MatchingSettings,
    team: Team,
    parser: ParserPool,
    selection: HistorySelection | None = None,
    now_fn: Callable[[], datetime] = utcnow,
    stop: threading.Event | None = None,
    imap_factory: Callable[[MailboxSettings], Callable[[ImapTarget], ImapSession]] | None = None,
) -> RelinkResult:
    """Link the earlier mail that `selection` selects, or (None) that the queued requests ask for.

    Never raises for IMAP or database trouble: the result's `errors` say what went wrong, and queued requests
    stay queued for the next run. `imap_factory(mailbox)` gives the connection factory of a mailbox (its
    password or OAuth sign-in); by default its password.
    """
    result = RelinkResult()
    request_ids: list[int] = []
    try:
        with sessions() as session:
            if selection is None:
                request_ids, selection = pending_requests(session)
                result.requests = len(request_ids)
            found = find_history(session, selection) if selection else []
    except SQLAlchemyError as exc:
        result.errors.append(f"database error: {exc}".splitlines()[0])
        return result
    result.found = len(found)
    by_mailbox = {name: list(rows) for name, rows in groupby(found, key=lambda r: r.mailbox)}
    for mailbox in mailboxes:
        rows = by_mailbox.get(mailbox.name)
        if not rows or (stop is not None and stop.is_set()):
            continue
        factory = imap_factory(mailbox) if imap_factory is not None else ImapSession
        _relink_mailbox(mailbox, rows, sessions, matching, team, parser, now_fn, stop, factory, result)
    stopped = stop is not None and stop.is_set()
    if request_ids and result.ok and not stopped:
        try:
            with transaction(sessions) as session:
                forget_requests(session, request_ids)
        except SQLAlchemyError as exc:
            result.errors.append(f"database error: {exc}".splitlines()[0])
    if result.found or result.errors:
        log.info("relink: %s", result.summary())
    return result


def prune(sessions: sessionmaker[Session], *, matching: MatchingSettings, now: datetime) -> int:
    """Forget skipped mail older than `[matching] history_days`."""
    with transaction(sessions) as session:
        return prune_history(session, now=now, days=matching.history_days)


def _relink_mailbox(
    mailbox: MailboxSettings,
    rows: list[IndexedMessage],
    sessions: sessionmaker[Session],
    matching: MatchingSettings,
    team: Team,
    parser: ParserPool,
    now_fn: Callable[[], datetime],
    stop: threading.Event | None,
    factory: Callable[[ImapTarget], ImapSession],
    result: RelinkResult,
) -> None:
    pipeline = Pipeline(
        mailbox, sessions, matching=matching, team=team, parser=parser, now_fn=now_fn, stop=stop
    )
    connections = MailboxConnections(mailbox, factory, per_folder=False)
    gone = fetched = 0
    try:
        for folder, group in groupby(rows, key=lambda r: r.folder):
            if pipeline.stopping:
                break
            lost, uids = _relink_folder(pipeline, connections.for_folder(folder), folder, list(group))
            gone, fetched = gone + lost, fetched + uids
    except ImapError as exc:
        result.errors.append(f"{mailbox.name}: {exc}")
    except SQLAlchemyError as exc:
        result.errors.append(f"{mailbox.name}: database error: {exc}".splitlines()[0])
        log.exception("%s: database error while linking earlier mail", mailbox.name)
    except StopRequested:
        pass
    except Exception as exc:  # a bug or the parser pool: reported, the queue stays for the next run
        result.errors.append(f"{mailbox.name}: {type(exc).__name__}: {exc}")
        log.exception("%s: linking earlier mail failed", mailbox.name)
    finally:
        connections.close()
    counts = pipeline.counts
    result.logged += counts.logged
    result.contacts_created += counts.contacts_created
    result.still_skipped += counts.skipped
    result.quarantined += counts.quarantined
    # a UID fetched again that came back empty is gone from the server too
    result.gone += gone + max(0, fetched - counts.new)


def _relink_folder(
    pipeline: Pipeline, imap: ImapSession, folder: str, rows: list[IndexedMessage]
) -> tuple[int, int]:
    """Fetch a folder's indexed messages again: (how many could not be found by their content key after a
    UIDVALIDITY change and were marked gone, how many UIDs were fetched)."""
    selected = imap.select_readonly(folder)
    try:
        uids: dict[int, list[int]] = {}
        stale = [r for r in rows if r.uidvalidity != selected.uidvalidity]
        for row in rows:
            if row.uidvalidity == selected.uidvalidity:
                uids.setdefault(row.uid, []).append(row.id)
        lost = _find_again(pipeline, imap, folder, selected.uidvalidity, stale, uids)
        if lost:
            with transaction(pipeline.sessions) as session:
                settle_history(session, gone=lost)
        pipeline.relink(folder, selected.uidvalidity, uids, imap)
        return len(lost), len(uids)
    finally:
        if imap.connected:
            imap.unselect()


def _find_again(
    pipeline: Pipeline,
    imap: ImapSession,
    folder: str,
    uidvalidity: int,
    stale: list[IndexedMessage],
    uids: dict[int, list[int]],
) -> list[int]:
    """Rows of an older UIDVALIDITY found again by content key (added to `uids`); the ids of the rest."""
    if not stale:
        return []
    with pipeline.sessions() as session:
        indexed = indexed_by_content_key(
            session,
            pipeline.mailbox.name,
            folder,
            uidvalidity,
            [r.content_key for r in stale if r.content_key],
        )
    lost: list[int] = []
    for row in stale:
        key = row.content_key
        if key in indexed:
            uid, row_id = indexed[key]
            uids.setdefault(uid, []).extend([row.id, row_id])
            continue
        found = _search_by_message_id(pipeline, imap, key) if key else None
        if found is None:
            lost.append(row.id)
        else:
            uids.setdefault(found, []).append(row.id)
    return lost


def _search_by_message_id(pipeline: Pipeline, imap: ImapSession, key: str) -> int | None:
    if not key.startswith("mid:<") or key.startswith("mid:sha256:"):
        return None  # no Message-ID (the key hashes the content) or one too long to search for
    candidates = imap.search_message_id(key[len("mid:") :])
    if not candidates:
        return None
    limit = pipeline.matching.max_header_bytes
    for fetched in imap.fetch_headers(candidates[:20], limit):
        if fetched.data.strip() and content_key(parse_headers(fetched.data, limit)) == key:
            return fetched.uid
    return None
