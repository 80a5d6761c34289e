"""Backfilling an mbox export (a mail provider's takeout) through the sync's own pipeline.

The file is treated as one more folder of the mailbox: folder `mbox:<file name>`, UIDVALIDITY a stable hash
of that name, UID the message's position (1-based). So the same decisions, content keys and quarantine apply
as for IMAP, mail the sync already logged only gains a sighting, and an interrupted import resumes where its
last committed batch ended.
"""

from __future__ import annotations

import mailbox as stdlib_mailbox
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from daemon.imap import Fetched
from daemon.matching import Team
from daemon.sync import Cursor, Pipeline, SyncResult, utcnow
from daemon.workers import ParserPool
from models.schema import FolderSyncState
from settings import MailboxSettings, MatchingSettings

_HEADER_END = (b"\r\n\r\n", b"\n\n")


class MboxError(Exception):
    """The file cannot be read as an mbox; the message is one line for the user."""


class MboxSource:
    """An mbox file read like an IMAP folder: messages by 1-based position, headers and whole messages."""

    def __init__(self, path: Path) -> None:
        try:
            self._box = stdlib_mailbox.mbox(str(path), create=False)
            self._keys = list(self._box.keys())
        except stdlib_mailbox.NoSuchMailboxError:
            raise MboxError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MboxError(f"{path}: cannot read: {exc}") from None
        self._cache: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        self._box.close()

    def raw(self, uid: int) -> bytes:
        cached = self._cache.pop(uid, None)
        return cached if cached is not None else self._box.get_bytes(self._keys[uid - 1])

    def fetch_headers(self, uids: Sequence[int], max_bytes: int | None = None) -> list[Fetched]:
        headers = []
        self._cache.clear()
        for uid in uids:
            raw = self._box.get_bytes(self._keys[uid - 1])
            self._cache[uid] = raw  # the body is usually wanted right after, if at all
            block = _header_block(raw)
            headers.append(Fetched(uid, block if max_bytes is None else block[: max_bytes + 1], len(raw)))
        return headers

    def still_present(self, uids: Sequence[int]) -> set[int]:
        return {uid for uid in uids if 1 <= uid <= len(self._keys)}

    def fetch_messages(self, uids: Sequence[int]) -> list[Fetched]:
        fetched = []
        for uid in uids:
            raw = self.raw(uid)
            fetched.append(Fetched(uid, raw, len(raw)))
        return fetched


def mbox_folder(path: Path) -> tuple[str, int]:
    """The folder name and UIDVALIDITY an mbox file is imported as (stable for the same file name)."""
    return f"mbox:{path.name}", zlib.crc32(path.name.encode("utf-8")) & 0x7FFFFFFF


def import_mbox(
    mailbox: MailboxSettings,
    sessions: sessionmaker[Session],
    path: Path,
    *,
    matching: MatchingSettings,
    team: Team,
    now_fn: Callable[[], datetime] = utcnow,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> SyncResult:
    """Import every message of an mbox not imported yet; progress(done, total) is called after each batch.

    Raises MboxError when the file cannot be read; database errors propagate (the CLI reports them).
    """
    started = time.monotonic()
    folder, uidvalidity = mbox_folder(path)
    source = MboxSource(path)
    parser = ParserPool(matching)
    pipeline = Pipeline(
        mailbox, sessions, matching=matching, team=team, parser=parser, now_fn=now_fn, stop=stop
    )
    try:
        total = len(source)
        if total == 0:
            raise MboxError(
                f"{path}: no messages found (an mbox file starts each message with a 'From ' line)"
            )
        with sessions() as session:
            state = session.scalar(
                select(FolderSyncState).where(
                    FolderSyncState.mailbox == mailbox.name, FolderSyncState.folder == folder
                )
            )
            done = state.last_uid if state is not None and state.uidvalidity == uidvalidity else 0
        if progress is not None:
            progress(done, total)
        batch_size = matching.batch_size

        def batches() -> Iterator[tuple[list[int], Cursor]]:
            for start in range(done + 1, total + 1, batch_size):
                batch = list(range(start, min(start + batch_size, total + 1)))
                yield batch, Cursor(uidvalidity, batch[-1])

        committed = (lambda cursor: progress(cursor.last_uid, total)) if progress is not None else None
        pipeline.run(folder, uidvalidity, batches(), source, committed=committed)
    finally:
        parser.close()
        source.close()
    return replace(pipeline.result(), seconds=time.monotonic() - started)


def _header_block(raw: bytes) -> bytes:
    ends = [i for i in (raw.find(marker) for marker in _HEADER_END) if i >= 0]
    return raw[: min(ends) + 2] if ends else raw
