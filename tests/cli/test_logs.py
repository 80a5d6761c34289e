"""The processes' logs: a line per event people act on, not a line per scheduled job run."""

from __future__ import annotations

import logging

import pytest

from threadline.logs import configure_logging


@pytest.mark.parametrize("executor", ["default", "webhooks", "another"])
def test_scheduler_job_runs_are_not_logged_at_info(executor: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    configure_logging("INFO")
    try:
        logging.getLogger(f"apscheduler.executors.{executor}").info('Running job "deliver webhooks"')
        logging.getLogger("threadline.sync").info("mailbox sales: 3 logged")
        logging.getLogger(f"apscheduler.executors.{executor}").warning("Run time of job was missed")
        err = capsys.readouterr().err
    finally:  # leave logging as the other tests had it
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in quieted.items():
            logging.getLogger(name).setLevel(was)
    assert "Running job" not in err
    assert "mailbox sales: 3 logged" in err and "Run time of job was missed" in err
