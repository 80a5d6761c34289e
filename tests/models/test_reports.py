"""The board and dashboard numbers on a small known dataset, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from models.activities import log_activity
from models.deals import create_deal, find_pipeline, find_stage, move_deal_to_stage
from models.errors import DomainError, NotFoundError
from models.reports import board, dashboard
from models.schema import Activity, ActivityKind, Contact, Deal, Direction, Pipeline, Stage, User
from tests.fixtures.factories import NOW

DAY = timedelta(days=1)


@dataclass
class Story:
    alice: User
    bob: User
    sales: Pipeline
    deals: dict[str, Deal]
    contacts: dict[str, Contact]


def _stage(sales: Pipeline, name: str) -> Stage:
    stage = find_stage(sales, name)
    assert stage is not None
    return stage


@pytest.fixture
def story(session: Session, make_user, make_company, make_contact) -> Story:
    """Five open deals, three won, two lost, eight new-ish contacts; 'now' is NOW (2026-11-23 09:00 UTC)."""
    alice = make_user(name="Alice")
    bob = make_user(name="Bob")
    acme = make_company("Acme")
    sales = find_pipeline(session, "Sales")
    assert sales is not None
    _stage(sales, "Demo").stall_days = 3
    session.flush()

    def deal(title, *, stage, value, created, currency="USD", owner=alice, moved=None, closes=None):
        made = create_deal(
            session,
            title=title,
            now=NOW - created,
            pipeline=sales,
            stage=_stage(sales, "Qualified"),
            value=Decimal(value),
            currency=currency,
            owner=owner,
            expected_close_on=closes,
            company=acme if title == "Acme" else None,
        )
        if stage != "Qualified":
            move_deal_to_stage(session, made, _stage(sales, stage), now=NOW - (moved or created))
        return made

    deals = {
        # open
        "Acme": deal("Acme", stage="Qualified", value="1000.05", created=20 * DAY, closes=date(2026, 12, 15)),
        "Globex": deal("Globex", stage="Qualified", value="2000", created=20 * DAY, owner=bob),
        "Initech": deal(
            "Initech", stage="Demo", value="4000", created=10 * DAY, moved=4 * DAY, closes=date(2026, 11, 10)
        ),
        "Umbrella": deal(
            "Umbrella",
            stage="Proposal",
            value="3000",
            currency="EUR",
            created=5 * DAY,
            moved=1 * DAY,
            owner=bob,
            closes=date(2027, 2, 1),
        ),
        "Hooli": deal(
            "Hooli", stage="Demo", value="500", created=2 * DAY, moved=2 * DAY, closes=date(2027, 8, 1)
        ),
        # closed: in the last 90 days W1, W2 won and L1 lost; W3 and L2 earlier
        "W1": deal("W1", stage="Won", value="5000", created=40 * DAY, moved=10 * DAY),
        "W2": deal("W2", stage="Won", value="3000", created=100 * DAY, moved=60 * DAY, owner=bob),
        "W3": deal("W3", stage="Won", value="7000", created=300 * DAY, moved=200 * DAY),
        "L1": deal("L1", stage="Lost", value="900", created=50 * DAY, moved=20 * DAY),
        "L2": deal("L2", stage="Lost", value="800", created=400 * DAY, moved=150 * DAY, owner=bob),
    }
    contacts = {
        "C1": make_contact("C1 no touch", created_at=NOW - 10 * DAY, owner=alice),
        "C2": make_contact("C2 called in time", created_at=NOW - 10 * DAY),
        "C3": make_contact("C3 called too late", created_at=NOW - 20 * DAY, owner=bob, company=acme),
        "C4": make_contact("C4 too young", created_at=NOW - 3 * DAY),
        "C5": make_contact("C5 too old", created_at=NOW - 40 * DAY),
        "C6": make_contact("C6 only a note", created_at=NOW - 12 * DAY),
        "C7": make_contact("C7 emailed", created_at=NOW - 9 * DAY),
        "C8": make_contact("C8 wrote in", created_at=NOW - 9 * DAY, email="c8@client.example"),
    }

    def activity(kind, days_ago, author, *, deal=None, contact=None):
        log_activity(
            session,
            kind=kind,
            occurred_at=NOW - days_ago * DAY,
            now=NOW,
            subject=f"{kind} x",
            author=author,
            deal=deal,
            contacts=[contact] if contact else [],
        )

    activity("call", 2, alice, deal=deals["Acme"])  # Acme touched 2 days ago: not stalled
    activity("meeting", 29, alice)
    activity("note", 40, alice)  # outside the 30 days
    activity("call", 8, alice, contact=contacts["C2"])  # 2 days after C2 was created
    activity("call", 5, bob, contact=contacts["C3"])  # 15 days after C3 was created
    activity("note", 11, bob, contact=contacts["C6"])  # a note is not contacting
    for days_ago in (1, 3, 6):
        activity("note", days_ago, bob)
    for contact, direction, author in (
        (contacts["C7"], Direction.OUT, alice),
        (contacts["C8"], Direction.IN, None),
    ):
        email = Activity(
            kind=ActivityKind.EMAIL,
            occurred_at=NOW - 8 * DAY,
            subject="Hello",
            author=author,
            direction=direction,
            created_at=NOW,
            snippet="",
            truncated=False,
            needs_deal_review=False,
        )
        email.contacts.append(contact)
        session.add(email)
    session.commit()
    return Story(alice, bob, sales, deals, contacts)


def usd(amount: str) -> dict[str, Decimal]:
    return {"USD": Decimal(amount)}


def test_board_columns_totals_cards_and_stalled_badges(session, story):
    shown = board(session, pipeline_id=story.sales.id, now=NOW, default_stall_days=14)

    assert shown.pipeline_name == "Sales"
    summary = [(c.name, c.kind.value, c.count, c.total, c.weighted, c.stall_days) for c in shown.columns]
    assert summary == [
        ("Qualified", "open", 2, usd("3000.05"), usd("300.01"), 14),  # 300.005 rounds half up
        ("Demo", "open", 2, usd("4500.00"), usd("1125.00"), 3),
        ("Proposal", "open", 1, {"EUR": Decimal("3000.00")}, {"EUR": Decimal("1500.00")}, 14),
        ("Negotiation", "open", 0, {}, {}, 14),
        ("Won", "won", 3, usd("15000.00"), usd("15000.00"), 14),
        ("Lost", "lost", 2, usd("1700.00"), usd("0.00"), 14),
    ]
    assert shown.currencies == ["EUR", "USD"]
    cards = {c.name: [(d.title, d.days_in_stage, d.stalled) for d in c.cards] for c in shown.columns}
    # most recently active first; Acme's call un-stalls it, Initech stalls after Demo's 3 days
    assert cards["Qualified"] == [("Acme", 20, False), ("Globex", 20, True)]
    assert cards["Demo"] == [("Hooli", 2, False), ("Initech", 4, True)]
    # won and lost are drop zones on the board: counted and summed, no cards
    assert shown.columns[4].cards == [] and shown.columns[4].more == 3
    acme = shown.columns[0].cards[0]
    assert (acme.company_name, acme.owner_name, acme.value, acme.currency) == (
        "Acme",
        "Alice",
        Decimal("1000.05"),
        "USD",
    )
    assert acme.last_touch_at == NOW - 2 * DAY
    assert all(c.more == 0 for c in shown.columns if c.kind.value == "open")


def test_board_limits_cards_and_filters_by_owner(session, story):
    limited = board(session, pipeline_id=story.sales.id, now=NOW, default_stall_days=14, cards_per_column=1)
    assert [(c.name, [d.title for d in c.cards], c.more) for c in limited.columns] == [
        ("Qualified", ["Acme"], 1),
        ("Demo", ["Hooli"], 1),
        ("Proposal", ["Umbrella"], 0),
        ("Negotiation", [], 0),
        ("Won", [], 3),
        ("Lost", [], 2),
    ]
    bobs = board(session, pipeline_id=story.sales.id, owner_id=story.bob.id, now=NOW, default_stall_days=14)
    assert [(c.name, c.count, [d.title for d in c.cards]) for c in bobs.columns if c.count] == [
        ("Qualified", 1, ["Globex"]),
        ("Proposal", 1, ["Umbrella"]),
        ("Won", 1, []),
        ("Lost", 1, []),
    ]
    # a longer default stall time un-stalls Globex (20 days untouched)
    relaxed = board(session, pipeline_id=story.sales.id, now=NOW, default_stall_days=30)
    assert [d.stalled for d in relaxed.columns[0].cards] == [False, False]
    with pytest.raises(NotFoundError):
        board(session, pipeline_id=9999, now=NOW, default_stall_days=14)
    with pytest.raises(DomainError, match="cards_per_column"):
        board(session, pipeline_id=story.sales.id, now=NOW, default_stall_days=14, cards_per_column=-1)


def test_dashboard_pipeline_forecast_and_win_rate(session, story):
    shown = dashboard(session, now=NOW, tz="UTC", default_stall_days=14)

    assert [(s.stage_name, s.count, s.value, s.weighted) for s in shown.open_by_stage] == [
        ("Qualified", 2, usd("3000.05"), usd("300.01")),
        ("Demo", 2, usd("4500.00"), usd("1125.00")),
        ("Proposal", 1, {"EUR": Decimal("3000.00")}, {"EUR": Decimal("1500.00")}),
        ("Negotiation", 0, {}, {}),
    ]
    assert shown.open_count == 5
    assert shown.open_total == {"EUR": Decimal("3000.00"), "USD": Decimal("7500.05")}
    assert shown.open_weighted == {"EUR": Decimal("1500.00"), "USD": Decimal("1425.01")}
    assert [(b.key, b.label, b.count, b.weighted) for b in shown.forecast] == [
        ("overdue", "Overdue", 1, usd("1000.00")),  # Initech, expected Nov 10
        ("2026-11", "Nov 2026", 0, {}),
        ("2026-12", "Dec 2026", 1, usd("100.01")),
        ("2027-01", "Jan 2027", 0, {}),
        ("2027-02", "Feb 2027", 1, {"EUR": Decimal("1500.00")}),
        ("2027-03", "Mar 2027", 0, {}),
        ("2027-04", "Apr 2027", 0, {}),
        ("later", "May 2027 or later", 1, usd("125.00")),  # Hooli, Aug 2027
        ("none", "No date", 1, usd("200.00")),  # Globex
    ]
    assert (shown.win_rate_90d.won, shown.win_rate_90d.lost) == (2, 1)
    assert shown.win_rate_90d.rate == pytest.approx(2 / 3)
    assert (shown.win_rate_all_time.won, shown.win_rate_all_time.lost, shown.win_rate_all_time.rate) == (
        3,
        2,
        0.6,
    )
    assert shown.average_deal_size_90d == usd("4000.00")  # (5000 + 3000) / 2
    assert shown.average_cycle_days_90d == pytest.approx(35.0)  # W1 30 days, W2 40 days
    assert shown.currencies == ["EUR", "USD"]


def test_dashboard_activity_stalled_and_uncontacted(session, story):
    shown = dashboard(session, now=NOW, tz="Europe/Paris", default_stall_days=14)

    reps = [
        (r.name, r.total, {k.value: n for k, n in r.counts.items() if n}) for r in shown.activities_by_rep
    ]
    assert reps == [
        ("Bob", 5, {"note": 4, "call": 1}),
        ("Alice", 4, {"email": 1, "call": 2, "meeting": 1}),  # the 40-day-old note is left out
    ]
    assert [(d.title, d.stage_name, d.stall_days, d.days_since_touch) for d in shown.stalled] == [
        ("Globex", "Qualified", 14, 20),  # stalled since 6 days
        ("Initech", "Demo", 3, 4),  # stalled since 1 day
    ]
    assert shown.stalled_count == 2
    assert shown.stalled[0].stalled_since == NOW - 6 * DAY
    assert (shown.stalled[0].owner_name, shown.stalled[0].value) == ("Bob", Decimal("2000.00"))
    waiting = [(c.name, c.days_waiting) for c in shown.uncontacted]
    assert waiting == [
        ("C3 called too late", 20),
        ("C6 only a note", 12),
        ("C1 no touch", 10),
        ("C8 wrote in", 9),
    ]
    assert shown.uncontacted_count == 4
    assert (shown.uncontacted[0].company_name, shown.uncontacted[0].owner_name) == ("Acme", "Bob")
    assert shown.uncontacted[3].email == "c8@client.example"


def test_dashboard_for_one_owner(session, story):
    shown = dashboard(
        session, now=NOW, tz="UTC", default_stall_days=14, owner_id=story.alice.id, pipeline_id=story.sales.id
    )
    assert [(s.stage_name, s.count) for s in shown.open_by_stage if s.count] == [
        ("Qualified", 1),
        ("Demo", 2),
    ]
    assert [d.title for d in shown.stalled] == ["Initech"]
    assert (shown.win_rate_90d.won, shown.win_rate_90d.lost) == (1, 1)
    assert shown.average_cycle_days_90d == pytest.approx(30.0)
    assert [r.name for r in shown.activities_by_rep] == ["Alice"]
    assert [c.name for c in shown.uncontacted] == ["C1 no touch"]


def test_forecast_months_follow_the_team_time_zone(session, make_deal):
    make_deal("Due Nov 30", expected_close_on=date(2026, 11, 30))
    evening = datetime(2026, 11, 30, 20, 0, tzinfo=UTC)  # already December 1st in Tokyo
    in_utc = dashboard(session, now=evening, tz="UTC", default_stall_days=14).forecast
    in_tokyo = dashboard(session, now=evening, tz="Asia/Tokyo", default_stall_days=14).forecast
    assert [(b.key, b.count) for b in in_utc if b.count] == [("2026-11", 1)]
    assert [(b.key, b.count) for b in in_tokyo if b.count] == [("overdue", 1)]
    assert in_tokyo[1].key == "2026-12"


def test_empty_database_and_bad_time_zone(session):
    shown = dashboard(session, now=NOW, tz="UTC", default_stall_days=14)
    assert (shown.open_count, shown.open_total, shown.stalled_count, shown.uncontacted_count) == (0, {}, 0, 0)
    assert shown.win_rate_90d.rate is None and shown.average_cycle_days_90d is None
    assert len(shown.forecast) == 9 and shown.activities_by_rep == []
    with pytest.raises(DomainError, match="time zone"):
        dashboard(session, now=NOW, tz="Mars/Olympus", default_stall_days=14)


def test_dashboard_stalled_list_follows_the_clock(session, story):
    later = dashboard(session, now=NOW + 10 * DAY, tz="UTC", default_stall_days=14)
    # ten days on: Hooli too (Demo stalls after 3 days); Acme (12 days) and Umbrella (11 days) not yet
    assert [d.title for d in later.stalled] == ["Globex", "Initech", "Hooli"]
    earlier = dashboard(session, now=NOW - 3 * DAY, tz="UTC", default_stall_days=14)
    assert [d.title for d in earlier.stalled] == ["Globex"]
