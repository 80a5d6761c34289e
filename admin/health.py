"""Health and metrics for load balancers, systemd and Prometheus: `/healthz`, `/readyz` and `/metrics`.

- `/healthz`: the process is alive and serving. No login, no database: a database outage must not make a
  supervisor restart a panel that is fine.
- `/readyz`: the database answers and is migrated to this version's schema; 503 with a one-line reason
  otherwise (details go to the log, not to whoever asks).
- `/metrics`: Prometheus text format, computed from the database at scrape time (admin/metrics.py). Off
  (404) until `[metrics] token_env` or `token_file` is set; then only a request carrying
  `Authorization: Bearer <token>` gets it, so it is never public by default, even behind the public proxy.

None of these routes needs a login or writes anything, so none needs CSRF protection.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, Response, request
from prometheus_client.exposition import choose_encoder
from sqlalchemy.orm import Session, sessionmaker

from admin.metrics import make_registry
from models import migrate
from models.db import engine_of
from models.health import expected_mailboxes
from settings import Settings

log = logging.getLogger("threadline.health")

# What /readyz tells anyone who asks; the driver's own message (host names, ports) only goes to the log.
_PUBLIC_REASONS = {
    migrate.SchemaState.UNREACHABLE: "database unreachable",
    migrate.SchemaState.EMPTY: "database is empty: run `threadline db upgrade`",
    migrate.SchemaState.BEHIND: "database schema is older than this version: run `threadline db upgrade`",
    migrate.SchemaState.UNKNOWN: "database schema is newer than this version",
}


def _text(body: str, status: int = 200, **headers: str) -> Response:
    response = Response(body, status=status, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers)
    return response


def blueprint(
    settings: Settings, sessions: sessionmaker[Session], clock: Callable[[], datetime]
) -> Blueprint:
    health = Blueprint("health", __name__)
    engine = engine_of(sessions)
    registry = make_registry(sessions, lambda: expected_mailboxes(settings.mailboxes), clock)
    token = settings.metrics.token
    last_problem: list[str | None] = [None]
    lock = threading.Lock()

    @health.get("/healthz")
    def healthz() -> Response:
        return _text("ok\n")

    @health.get("/readyz")
    def readyz() -> Response:
        status = migrate.schema_status(engine)
        problem = status.problem
        with lock:  # log each change of state once, not once per probe
            if problem != last_problem[0]:
                if problem is None:
                    log.info("ready: the database answers and its schema is current")
                else:
                    log.warning("not ready: %s", problem)
                last_problem[0] = problem
        if problem is None:
            return _text("ready\n")
        return _text(f"not ready: {_PUBLIC_REASONS[status.state]}\n", 503)

    @health.get("/metrics")
    def metrics() -> Response:
        if token is None:
            return _text("metrics are off: set [metrics] token_env or token_file to turn them on\n", 404)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.reveal().encode()
        ):
            return _text(
                "a valid bearer token is required\n",
                401,
                **{"WWW-Authenticate": 'Bearer realm="threadline metrics"'},
            )
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = Response(encode(registry), status=200)
        response.headers["Content-Type"] = content_type
        response.headers["Cache-Control"] = "no-store"
        return response

    return health
