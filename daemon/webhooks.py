"""Webhook delivery: the one module that sends events over HTTP (models.webhooks keeps the outbox).

The daemon runs `WebhookSender.run_once` every couple of seconds on a scheduler executor of its own, and the
requests themselves go out on this sender's own thread pool (`[api] webhook_workers`), each thread with a
kept-alive `requests.Session`: a slow or dead receiver holds these threads for at most the timeout and never
a mailbox's sync. One round claims the due deliveries (leased, see models.webhooks), posts them in parallel,
and records the outcomes in one short transaction. A 2xx answer is a delivery; anything else (another status,
a timeout, a refused connection) is retried with backoff until the retry period ends and the subscription is
paused. Certificates are verified (requests' default); redirects are not followed.

Nothing is logged for a round with nothing to send; a round that sent or failed something logs one line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from sqlalchemy.orm import Session, sessionmaker

from models.db import transaction
from models.secrets import SecretBox
from models.webhooks import (
    DueDelivery,
    claim_due,
    enqueue_due_tasks,
    event_body,
    record_delivered,
    record_failed,
    sign,
    signing_secret,
)
from settings import ApiSettings

log = logging.getLogger("threadline.webhooks")

BATCH = 200
USER_AGENT = "Threadline-Webhooks/1"


@dataclass(frozen=True)
class Round:
    delivered: int = 0
    failed: int = 0
    paused: int = 0
    due_tasks: int = 0


class WebhookSender:
    """Delivers due webhook events; `close()` when done."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: ApiSettings,
        box: SecretBox | None,
        *,
        now_fn: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.box = box
        self.now_fn = now_fn
        self.timeout = settings.webhook_timeout_seconds
        self.retry_for = timedelta(hours=settings.webhook_retry_hours)
        self.pool = ThreadPoolExecutor(settings.webhook_workers, thread_name_prefix="webhook")
        self._local = threading.local()
        self._secrets: dict[str, str] = {}

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _http(self) -> requests.Session:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
            http.headers["User-Agent"] = USER_AGENT
        return http

    def _secret(self, encrypted: str) -> str:
        if encrypted not in self._secrets:
            self._secrets[encrypted] = signing_secret(encrypted, self.box)
        return self._secrets[encrypted]

    def send(self, delivery: DueDelivery) -> str | None:
        """POST one event; None when the receiver took it (2xx), else what went wrong."""
        body = event_body(delivery)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Threadline-Event-Id": delivery.event_id,
            "Threadline-Event-Type": delivery.type,
            "Threadline-Timestamp": str(timestamp),
            "Threadline-Signature": sign(self._secret(delivery.secret_encrypted), timestamp, body),
        }
        try:
            response = self._http().post(
                delivery.target_url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {str(exc)[:300]}"
        with response:
            if 200 <= response.status_code < 300:
                return None
            return f"HTTP {response.status_code} from {delivery.target_url}"

    def run_once(self) -> Round:
        """One round: announce tasks that fell due, claim what is due, send it, record the outcomes."""
        now = self.now_fn()
        with transaction(self.sessions) as session:
            due_tasks = enqueue_due_tasks(session, now=now)
            due = claim_due(session, now=now, limit=BATCH, lease=timedelta(seconds=self.timeout * 2 + 5))
        if not due:
            return Round(due_tasks=due_tasks)
        errors = list(self.pool.map(self.send, due))
        done = self.now_fn()
        paused = 0
        with transaction(self.sessions) as session:
            record_delivered(session, [d.id for d, e in zip(due, errors, strict=True) if e is None], now=done)
            for delivery, error in zip(due, errors, strict=True):
                if error is not None:
                    paused += record_failed(session, delivery, error, now=done, retry_for=self.retry_for)
        result = Round(
            delivered=sum(e is None for e in errors),
            failed=sum(e is not None for e in errors),
            paused=paused,
            due_tasks=due_tasks,
        )
        if result.failed:
            log.warning(
                "webhooks: %d delivered, %d failed (retried later), %d subscription(s) paused",
                result.delivered, result.failed, result.paused,
            )  # fmt: skip
        else:
            log.info("webhooks: %d delivered", result.delivered)
        return result

    def run_until_idle(self, stop: threading.Event | None = None) -> None:
        """Rounds until nothing is due (the scheduled job): a backlog drains without waiting for a tick."""
        while stop is None or not stop.is_set():
            result = self.run_once()
            if result.delivered + result.failed < BATCH:
                return
