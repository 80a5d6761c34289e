"""Moving deals between stages: the one operation that records history and keeps status right."""

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from models.deals import move_deal_to_stage, parse_money
from models.errors import DomainError
from models.schema import Deal, DealStageChange, DealStatus
from tests.fixtures.factories import stage_named


def test_new_deal_starts_in_first_open_stage_with_history(session, make_deal, make_user, now):
    owner = make_user()
    deal = make_deal(title="Acme renewal", owner=owner, value="12500.50")
    assert deal.stage.name == "Qualified"
    assert deal.status == DealStatus.OPEN
    assert deal.value == Decimal("12500.50")
    history = session.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal.id)).all()
    assert [(h.from_stage_id, h.to_stage.name) for h in history] == [(None, "Qualified")]


def test_moving_to_won_closes_and_back_reopens(session, make_deal, make_user, now):
    rep = make_user()
    deal = make_deal(title="Globex pilot")
    won = stage_named(session, "Won")
    later = now + timedelta(days=3)
    move_deal_to_stage(session, deal, won, now=later, by=rep)
    session.commit()
    session.expire_all()
    deal = session.get(Deal, deal.id)
    assert (deal.status, deal.closed_at, deal.stage_entered_at) == (DealStatus.WON, later, later)
    move_deal_to_stage(session, deal, stage_named(session, "Demo"), now=later + timedelta(hours=1), by=rep)
    session.commit()
    assert deal.status == DealStatus.OPEN and deal.closed_at is None
    moves = [
        (c.from_stage.name if c.from_stage else None, c.to_stage.name, c.changed_by_id)
        for c in deal.stage_changes
    ]
    assert moves == [(None, "Qualified", None), ("Qualified", "Won", rep.id), ("Won", "Demo", rep.id)]


def test_lost_keeps_reason_and_same_stage_is_no_change(session, make_deal, now):
    deal = make_deal()
    assert move_deal_to_stage(session, deal, deal.stage, now=now) is None
    move_deal_to_stage(
        session, deal, stage_named(session, "Lost"), now=now, lost_reason="Went with a competitor"
    )
    session.commit()
    assert (deal.status, deal.lost_reason) == (DealStatus.LOST, "Went with a competitor")


def test_money_is_decimal_and_rejects_nonsense():
    assert parse_money("1,234.50") == Decimal("1234.50")
    for bad in ("abc", "-5", "1.234"):
        with pytest.raises(DomainError):
            parse_money(bad)


@pytest.mark.parametrize("currency", ["dollars", "DOL", "E U R", "12€"])
def test_a_deal_currency_must_be_an_iso_4217_code(session, currency, now):
    from models.deals import create_deal

    with pytest.raises(DomainError, match="is not a currency"):
        create_deal(session, title="Acme renewal", now=now, currency=currency)
    assert session.scalars(select(Deal)).all() == []


def test_a_deal_currency_is_written_as_its_code(session, now):
    from models.deals import create_deal

    assert create_deal(session, title="Euro deal", now=now, currency=" eur ").currency == "EUR"
    assert create_deal(session, title="Default", now=now).currency == "USD"
    assert create_deal(session, title="Empty", now=now, currency="").currency == "USD"
