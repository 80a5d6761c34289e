"""Parsing message bodies in worker processes, where a runaway message can be stopped.

`ParserPool` keeps a few worker processes (one per CPU core by default, `[matching] parse_workers`), each
running `python -m daemon.workers`: it reads raw messages from its stdin and writes back the parsed
`MessageBody` (daemon.parsing.body, the one module importing mail-parser; the sync's own process never
imports it), and header blocks, answering with `MessageHeaders` (daemon.parsing.headers). This buys three
things:

- Speed: parsing is most of the cost of logging mail, and it runs on every core while the sync's own
  thread fetches the next messages and writes the last batch. Header blocks go to the front of the queue:
  the sync decides from them what to fetch next, so it waits for them, never for bodies queued earlier.
- A time limit: a parse that takes longer than `[matching] parse_timeout_seconds` has its worker killed
  (SIGKILL; a replacement starts and takes over the messages that were waiting for it) and the message's
  result is a `ParseFailure` saying so, which the sync quarantines. A worker that dies mid-parse (a crash in
  a C extension, out of memory) gives a failure for that message too.
- Prompt shutdown: closing the pool kills the workers at once, whatever they are parsing.
- A memory limit: each worker's address space is capped (WORKER_MEMORY_BYTES), so a message that would
  need gigabytes fails alone.

Failures of the pool itself are not a message's fault and never end in quarantine: a worker that cannot even
start raises `ParserPoolError` to whoever waits for a result, and the sync fails the run (and retries
later) rather than set mail aside. Workers ignore SIGINT and SIGTERM (the sync decides when they stop) and
exit by themselves when the sync's process goes away, through a pipe they watch.

The protocol is length-prefixed pickles over the worker's stdin and stdout: an init frame (the limits), then
one frame per job, `(ticket, kind, raw bytes)` in and `(ticket, MessageBody | MessageHeaders | ParseFailure)`
out.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import pickle
import queue
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import IO, Any

from models.messages import MessageBody, MessageHeaders, QuarantineReason
from settings import MatchingSettings

log = logging.getLogger(__name__)

_FRAME = struct.Struct("!Q")
_PIPE_BYTES = 1024 * 1024
_JOBS_PER_WRITE = 64
# Address space a parser process may use: the largest message allowed (max_message_bytes) parses in a
# fraction of it; a pathological one hits it and is quarantined instead of exhausting the machine.
WORKER_MEMORY_BYTES = 1536 * 1024 * 1024
_READY = "ready"
# How often waiting threads look at the stop event, and the watchdog at deadlines, at the least.
_TICK = 0.1


@dataclass(frozen=True)
class ParseFailure:
    """A message that could not be parsed; `reason` starts with its QuarantineReason."""

    reason: str


ParseResult = MessageBody | ParseFailure
HeadersResult = MessageHeaders | ParseFailure
_BODY = "body"
_HEADERS = "headers"


class ParserPoolError(Exception):
    """The worker processes cannot run (not a problem of any message): the sync fails and retries later."""


class StopRequested(Exception):
    """The stop event was set while waiting for parse results."""


@dataclass
class _Job:
    ticket: int
    raw: bytes
    future: Future[Any]
    kind: str = _BODY


class _Worker:
    """One worker process, the jobs sent to it (the first is being parsed, the rest wait in its pipe) and the
    thread that writes them: the sync's threads never block on a full pipe."""

    def __init__(self, limits: MatchingSettings) -> None:
        alive_r, self._alive_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon.workers", str(alive_r)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(alive_r,),
                close_fds=True,
            )
        finally:
            os.close(alive_r)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        for stream in (self.stdin, self.stdout):
            # a pipe of 1 MB instead of 64 KB: a message goes through in one write and one wake-up
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.ready = False
        self.jobs: collections.deque[_Job] = collections.deque()
        self.queued_bytes = 0
        self.started_at = 0.0  # when the first of `jobs` began, as near as this process can tell
        self.killed_for: str | None = None
        self._outbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        _write_frame(self.stdin, limits)
        threading.Thread(target=self._write, name="parser-writer", daemon=True).start()

    def send(self, job: _Job) -> None:
        if not self.jobs:
            self.started_at = time.monotonic()
        self.jobs.append(job)
        self.queued_bytes += len(job.raw)
        self._outbox.put(job)

    def done(self) -> _Job | None:
        """The first job is answered: the next one starts now."""
        job = self.jobs.popleft() if self.jobs else None
        if job is not None:
            self.queued_bytes -= len(job.raw)
        self.started_at = time.monotonic()
        return job

    def _write(self) -> None:
        while (job := self._outbox.get()) is not None:
            # the jobs queued meanwhile go out in the same write: one wake-up of this thread (and one turn at
            # the interpreter lock the sync's thread holds) for a burst of jobs, not one per job
            jobs = [job]
            while len(jobs) < _JOBS_PER_WRITE:
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                jobs.append(more)
            try:
                _write_frames(self.stdin, [(j.ticket, j.kind, j.raw) for j in jobs])
            except (OSError, ValueError):
                return  # the worker is gone: its reader thread reports it

    def kill(self) -> None:
        self._outbox.put(None)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(OSError):
            os.close(self._alive_w)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class ParserPool:
    """Worker processes parsing message bodies under a time limit; thread safe; started on first use.

    Each worker is sent several jobs ahead (up to QUEUE_JOBS and QUEUE_BYTES), so it never waits for this
    process, whose threads share one interpreter lock with the sync, to hand it the next message.
    """

    QUEUE_JOBS = 16
    QUEUE_BYTES = 8 * 1024 * 1024

    def __init__(self, limits: MatchingSettings, *, workers: int | None = None) -> None:
        self.limits = limits
        self.size = max(1, workers or limits.parse_workers or os.cpu_count() or 1)
        self.timeout = limits.parse_timeout_seconds
        self._lock = threading.RLock()
        self._pending: collections.deque[_Job] = collections.deque()
        self._workers: list[_Worker] = []
        self._tickets = 0
        self._closed = False
        self._broken: str | None = None
        self._start_failures = 0
        self._watchdog: threading.Thread | None = None
        self._wake = threading.Event()

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the caller's side ----------------------------------------------------------------------------------

    def submit(self, raw: bytes) -> Future[ParseResult]:
        """Queue a raw message for parsing; the future's result is a MessageBody or a ParseFailure."""
        future: Future[ParseResult] = Future()
        with self._lock:
            if self._closed:
                raise ParserPoolError("the parser pool is closed")
            if self._broken is not None:
                future.set_exception(ParserPoolError(self._broken))
                return future
            self._tickets += 1
            self._pending.append(_Job(self._tickets, raw, future))
            self._start()
            self._dispatch()
        return future

    def submit_headers(self, blocks: Sequence[bytes]) -> list[Future[HeadersResult]]:
        """Queue header blocks ahead of every body waiting to be sent to a worker; each future's result is
        the block's MessageHeaders or a ParseFailure."""
        futures: list[Future[HeadersResult]] = [Future() for _ in blocks]
        with self._lock:
            if self._closed:
                raise ParserPoolError("the parser pool is closed")
            if self._broken is not None:
                for future in futures:
                    future.set_exception(ParserPoolError(self._broken))
                return futures
            jobs = []
            for block, future in zip(blocks, futures, strict=True):
                self._tickets += 1
                jobs.append(_Job(self._tickets, block, future, _HEADERS))
            self._pending.extendleft(reversed(jobs))
            self._start()
            self._dispatch()
        return futures

    def parse(self, raw: bytes, stop: threading.Event | None = None) -> ParseResult:
        """Parse one message and wait for it (StopRequested if `stop` is set meanwhile)."""
        result: ParseResult = wait_for([self.submit(raw)], stop)[0]
        return result

    def close(self) -> None:
        """Kill the workers at once; results not in yet are cancelled."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            pending = [job for worker in workers for job in worker.jobs] + list(self._pending)
            self._pending.clear()
        self._wake.set()
        for worker in workers:
            worker.kill()
        for job in pending:
            job.future.cancel()

    # -- workers --------------------------------------------------------------------------------------------

    def _start(self) -> None:
        """Top the pool up to its size (called with the lock held)."""
        while len(self._workers) < self.size and not self._closed:
            try:
                worker = _Worker(self.limits)
            except OSError as exc:
                self._fail_all(f"cannot start a parser process: {exc}")
                return
            self._workers.append(worker)
            threading.Thread(target=self._read, args=(worker,), name="parser-reader", daemon=True).start()
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="parser-watchdog", daemon=True)
            self._watchdog.start()

    def _dispatch(self) -> None:
        """Hand pending jobs to ready workers with room, the least busy first (called with the lock held)."""
        while self._pending:
            room = [
                w
                for w in self._workers
                if w.ready
                and w.killed_for is None
                and len(w.jobs) < self.QUEUE_JOBS
                and (not w.jobs or w.queued_bytes + len(self._pending[0].raw) <= self.QUEUE_BYTES)
            ]
            if not room:
                return
            min(room, key=lambda w: (len(w.jobs), w.queued_bytes)).send(self._pending.popleft())

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                message = _read_frame(worker.stdout)
            except Exception:  # a garbled frame: the worker cannot be trusted any more
                log.exception("unreadable answer from a parser process")
                message = None
            if message is None:
                self._died(worker)
                return
            with self._lock:
                if message == _READY:
                    worker.ready = True
                    self._start_failures = 0
                else:
                    ticket, result = message
                    job = worker.done()
                    if job is not None and job.ticket == ticket and not job.future.done():
                        job.future.set_result(result)
                self._dispatch()

    def _died(self, worker: _Worker) -> None:
        with self._lock:
            if worker not in self._workers:
                return  # closed or already replaced
            self._workers.remove(worker)
            first = worker.jobs.popleft() if worker.jobs else None
            if first is not None and not first.future.done():
                reason = worker.killed_for or QuarantineReason.PARSER_CRASHED.because(
                    f"the parser process ended with status {worker.process.poll()}"
                )
                first.future.set_result(ParseFailure(reason))
            # the jobs queued behind it were not started: they go to the next worker, in order
            self._pending.extendleft(reversed(worker.jobs))
            worker.jobs.clear()
            if not worker.ready and worker.killed_for is None:
                self._start_failures += 1
                if self._start_failures >= 3:
                    self._fail_all(
                        f"parser processes exit at start (status {worker.process.poll()}): "
                        f"run `{sys.executable} -m daemon.workers` to see why"
                    )
            worker.kill()
            if self._broken is None:
                self._start()
                self._dispatch()

    def _watch(self) -> None:
        """Kill workers whose current job is past its deadline; the reader thread then reports the timeout."""
        while True:
            self._wake.wait(_TICK)
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                late = [
                    w
                    for w in self._workers
                    if w.jobs and w.killed_for is None and now - w.started_at > self.timeout
                ]
                for worker in late:
                    worker.killed_for = QuarantineReason.PARSE_TIMEOUT.because(
                        f"not parsed within parse_timeout_seconds ({self.timeout:g} s)"
                    )
            for worker in late:
                log.warning(
                    "a message took longer than %g s to parse: its parser process is stopped", self.timeout
                )
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()

    def _fail_all(self, reason: str) -> None:
        self._broken = reason
        log.error("%s", reason)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(ParserPoolError(reason))
        self._pending.clear()


def wait_for(
    futures: Sequence[Future[Any]], stop: threading.Event | None, *, grace: float = 0.0
) -> list[Any]:
    """The results of these futures in order, waiting as long as it takes; once `stop` is set, at most
    `grace` seconds more, then StopRequested."""
    remaining = set(futures)
    deadline: float | None = None
    while remaining:
        if stop is not None and stop.is_set():
            deadline = deadline if deadline is not None else time.monotonic() + grace
            if time.monotonic() >= deadline:
                raise StopRequested
        _, remaining = wait_futures(remaining, timeout=_TICK)
    results: list[Any] = []
    for future in futures:
        if future.cancelled():
            raise StopRequested
        results.append(future.result())
    return results


# -- the framing -------------------------------------------------------------------------------------------


def _write_frame(stream: IO[bytes], value: Any) -> None:
    _write_frames(stream, [value])


def _write_frames(stream: IO[bytes], values: Sequence[Any]) -> None:
    chunks: list[bytes] = []
    for value in values:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        chunks += (_FRAME.pack(len(data)), data)
    stream.write(b"".join(chunks))
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    header = _read_exactly(stream, _FRAME.size)
    if header is None:
        return None
    (length,) = _FRAME.unpack(header)
    data = _read_exactly(stream, length)
    if data is None:
        return None
    return pickle.loads(data)  # noqa: S301 (frames come from our own worker process)


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# -- the worker's side ------------------------------------------------------------------------------------


def _watch_parent(alive_fd: int) -> None:
    """End this worker when the sync's process is gone (its end of the pipe closes), even mid-parse."""
    with contextlib.suppress(OSError):
        os.read(alive_fd, 1)
    os._exit(0)


def work(stdin: IO[bytes], stdout: IO[bytes], alive_fd: int | None) -> None:
    """The worker loop: parse each message sent, answer with its body or the reason it failed."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):
        # a message that needs more memory than this fails alone (MemoryError, or the worker dies)
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    if alive_fd is not None:
        threading.Thread(target=_watch_parent, args=(alive_fd,), daemon=True).start()
    from daemon.parsing.body import ParseError, parse_body
    from daemon.parsing.headers import parse_headers

    limits: MatchingSettings = _read_frame(stdin)
    _write_frame(stdout, _READY)
    while True:
        job = _read_frame(stdin)
        if job is None:
            return
        ticket, kind, raw = job
        result: ParseResult | HeadersResult
        try:
            if kind == _HEADERS:
                result = parse_headers(raw, limits.max_header_bytes)
            else:
                result = parse_body(raw, limits)
        except ParseError as exc:
            result = ParseFailure(QuarantineReason.PARSE_ERROR.because(str(exc)))
        except Exception as exc:  # a parser bug must cost one message, not the worker
            result = ParseFailure(QuarantineReason.PARSE_ERROR.because(f"{type(exc).__name__}: {exc}"[:500]))
        _write_frame(stdout, (ticket, result))


def main(argv: Sequence[str]) -> None:
    # frames go out on the original stdout; anything a library prints lands on stderr instead of in them
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    work(sys.stdin.buffer, frames, int(argv[0]) if argv else None)


if __name__ == "__main__":
    # run the importable module's main, so that what the worker pickles names daemon.workers, not __main__
    import daemon.workers

    daemon.workers.main(sys.argv[1:])
