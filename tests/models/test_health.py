"""The one rule for a mailbox's health, judged from the rows the sync writes, at a `now` the test chooses."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy.orm import Session

from models.health import ExpectedMailbox, MailboxState, mailbox_health, stale_after, take_snapshot
from models.mailboxes import MailboxFields, create_mailbox, pause_mailbox
from models.schema import FolderSyncState, MailboxStatus, QuarantinedMessage
from models.secrets import SecretBox, generate_key
from tests.fixtures.factories import NOW


def states(session: Session, *expected: ExpectedMailbox, now=NOW) -> dict[str, MailboxState]:
    return {m.name: m.state for m in mailbox_health(session, expected, now=now)}


def test_stale_after_three_polls_never_less_than_a_quarter_of_an_hour() -> None:
    assert stale_after(60) == timedelta(minutes=15)
    assert stale_after(3600) == timedelta(hours=3)


def ok_since(mailbox: str, ago: timedelta) -> MailboxStatus:
    return MailboxStatus(mailbox=mailbox, last_success_at=NOW - ago, consecutive_failures=0)


def test_each_state_from_the_rows_the_sync_writes(session: Session) -> None:
    session.add_all(
        [
            ok_since("fresh", timedelta(minutes=2)),
            ok_since("quiet", timedelta(minutes=16)),
            MailboxStatus(
                mailbox="broken",
                last_success_at=NOW - timedelta(minutes=1),
                consecutive_failures=3,
                last_error="login refused",
                next_attempt_at=NOW + timedelta(minutes=5),
            ),
            # the first pass is still running: only folder batches have committed so far
            FolderSyncState(
                mailbox="importing",
                folder="INBOX",
                last_uid=500,
                messages_seen=500,
                messages_logged=420,
                last_success_at=NOW - timedelta(seconds=20),
            ),
            ok_since("removed", timedelta(days=30)),
        ]
    )
    session.commit()
    found = states(
        session,
        ExpectedMailbox("fresh"),
        ExpectedMailbox("quiet"),
        ExpectedMailbox("broken"),
        ExpectedMailbox("importing"),
        ExpectedMailbox("new"),
        ExpectedMailbox("hourly", poll_seconds=3600),
    )
    assert found == {
        "fresh": MailboxState.OK,
        "quiet": MailboxState.STALE,
        "broken": MailboxState.FAILING,
        "importing": MailboxState.OK,
        "new": MailboxState.NEVER,
        "hourly": MailboxState.NEVER,
        "removed": MailboxState.UNCONFIGURED,
    }
    assert list(found) == ["fresh", "quiet", "broken", "importing", "new", "hourly", "removed"]
    assert [s for s in MailboxState if s.is_problem] == [
        MailboxState.FAILING,
        MailboxState.STALE,
        MailboxState.NEVER,
    ]
    # an hourly poll is not stale after 16 minutes
    session.add(MailboxStatus(mailbox="hourly", last_success_at=NOW - timedelta(minutes=16)))
    session.commit()
    assert states(session, ExpectedMailbox("hourly", poll_seconds=3600))["hourly"] is MailboxState.OK


def test_numbers_add_up_over_folders_and_only_pending_quarantine_counts(session: Session) -> None:
    for folder, seen, logged in (("INBOX", 10, 7), ("Sent", 5, 5)):
        session.add(
            FolderSyncState(
                mailbox="jane", folder=folder, last_uid=seen, messages_seen=seen, messages_logged=logged,
                last_success_at=NOW,
            )
        )  # fmt: skip
    for uid, resolved in ((1, None), (2, None), (3, NOW)):
        session.add(
            QuarantinedMessage(
                mailbox="jane", folder="INBOX", uidvalidity=1, uid=uid, reason="cannot parse", raw=b"x",
                created_at=NOW, last_attempt_at=NOW, resolved_at=resolved,
            )
        )  # fmt: skip
    session.add(
        MailboxStatus(
            mailbox="jane", last_success_at=NOW - timedelta(minutes=1), consecutive_failures=0,
            next_attempt_at=NOW - timedelta(minutes=3),  # a past backoff is over
        )
    )  # fmt: skip
    session.commit()
    snapshot = take_snapshot(session, [ExpectedMailbox("jane")], now=NOW)
    [jane] = snapshot.mailboxes
    assert (jane.messages_seen, jane.messages_logged, jane.quarantined) == (15, 12, 2)
    assert jane.last_success_at == NOW and jane.seconds_since_success(NOW) == 0
    assert jane.backoff_seconds(NOW) == 0
    assert snapshot.problems == ()
    assert [k.kind for k in snapshot.alerts.kinds] == [
        "stalled_deal", "overdue_task", "waiting_lead", "reconnect_needed"
    ]  # fmt: skip
    assert snapshot.alerts.digests_sent == 0 and snapshot.emails_needing_review == 0


def test_mailboxes_managed_in_the_database_count_and_a_paused_one_is_no_problem(session: Session) -> None:
    box = SecretBox([generate_key()])
    for name, poll in (("shared-sales", 120), ("on-hold", 60), ("jane", 300)):
        fields = MailboxFields(name=name, host="imap.example.com", username=f"{name}@team.example")
        create_mailbox(
            session, replace(fields, poll_seconds=poll), password="pw", box=box, providers={}, now=NOW
        )
    pause_mailbox(session, "on-hold", now=NOW)
    session.add(ok_since("shared-sales", timedelta(minutes=20)))  # three polls of 2 minutes, and 15 minutes
    session.commit()
    found = {m.name: m for m in mailbox_health(session, [ExpectedMailbox("jane", poll_seconds=60)], now=NOW)}
    assert list(found) == ["jane", "on-hold", "shared-sales"]
    assert found["shared-sales"].state is MailboxState.STALE
    assert found["on-hold"].state is MailboxState.PAUSED and not MailboxState.PAUSED.is_problem
    assert found["jane"].state is MailboxState.NEVER  # the config file's entry wins over the stored one
