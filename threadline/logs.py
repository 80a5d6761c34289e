"""Logging setup for every Threadline process: one readable line per event on stderr."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_threadline", False):
            root.removeHandler(existing)
    handler._threadline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in (
        "alembic",
        "mailparser",
        "imapclient",
        "waitress.queue",
        "apscheduler.executors",  # every executor (default, webhooks): a line per job run otherwise
        "apscheduler.scheduler",
        # HTTP libraries under the OAuth client: their debug lines carry URLs and headers
        "urllib3",
        "authlib",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
