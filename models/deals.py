"""Deals and pipelines: creating deals and moving them between stages.

`move_deal_to_stage` is the one way a deal changes stage, whether the board, a form, an import or a script
asks: it records the stage history and keeps status and closed_at consistent with the stage's kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.errors import DomainError, NotFoundError
from models.money import DEFAULT_CURRENCY, normalize_currency
from models.schema import (
    Company,
    Contact,
    Deal,
    DealStageChange,
    DealStatus,
    Pipeline,
    Stage,
    StageKind,
    User,
)

_STATUS_FOR_KIND = {
    StageKind.OPEN: DealStatus.OPEN,
    StageKind.WON: DealStatus.WON,
    StageKind.LOST: DealStatus.LOST,
}


def parse_money(value: str | Decimal | int) -> Decimal:
    """A money amount from user input; refuses floats' rounding surprises and nonsense."""
    if isinstance(value, Decimal | int):
        amount = Decimal(value)
    else:
        text = value.strip().replace(",", "").replace("_", "")
        try:
            amount = Decimal(text or "0")
        except InvalidOperation:
            raise DomainError(f"{value!r} is not an amount") from None
    if not amount.is_finite() or amount < 0:
        raise DomainError(f"{value!r} is not a positive amount")
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise DomainError(f"{value!r} has more than two decimals")
    return amount.quantize(Decimal("0.01"))


def find_pipeline(session: Session, name: str) -> Pipeline | None:
    return session.scalar(select(Pipeline).where(func.lower(Pipeline.name) == name.strip().lower()))


def default_pipeline(session: Session) -> Pipeline:
    pipeline = session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)).first()
    if pipeline is None:
        raise NotFoundError("no pipeline exists yet: run `threadline db upgrade`")
    return pipeline


def find_stage(pipeline: Pipeline, name: str) -> Stage | None:
    wanted = name.strip().lower()
    return next((s for s in pipeline.stages if s.name.lower() == wanted), None)


def first_open_stage(pipeline: Pipeline) -> Stage:
    stage = next((s for s in pipeline.stages if s.kind == StageKind.OPEN), None)
    if stage is None:
        raise DomainError(f"pipeline {pipeline.name!r} has no open stage")
    return stage


def create_deal(
    session: Session,
    *,
    title: str,
    now: datetime,
    pipeline: Pipeline | None = None,
    stage: Stage | None = None,
    value: Decimal = Decimal("0"),
    currency: str = DEFAULT_CURRENCY,
    company: Company | None = None,
    contacts: Sequence[Contact] = (),
    owner: User | None = None,
    expected_close_on: date | None = None,
    by: User | None = None,
    alerts_muted: bool = False,
) -> Deal:
    """A new deal in a stage (the pipeline's first open stage by default), with its first history entry."""
    if not title.strip():
        raise DomainError("a deal needs a title")
    if stage is not None:
        pipeline = stage.pipeline
    pipeline = pipeline or default_pipeline(session)
    stage = stage or first_open_stage(pipeline)
    if stage.pipeline_id != pipeline.id:
        raise DomainError(f"stage {stage.name!r} is not in pipeline {pipeline.name!r}")
    currency = normalize_currency(currency)
    status = _STATUS_FOR_KIND[stage.kind]
    deal = Deal(
        title=title.strip(),
        value=value,
        currency=currency,
        pipeline=pipeline,
        stage=stage,
        company=company,
        owner=owner,
        expected_close_on=expected_close_on,
        status=status,
        created_at=now,
        stage_entered_at=now,
        closed_at=now if status != DealStatus.OPEN else None,
        alerts_muted=alerts_muted,
    )
    deal.contacts.extend(contacts)
    session.add(deal)
    session.flush()
    session.add(
        DealStageChange(deal=deal, from_stage_id=None, to_stage_id=stage.id, changed_at=now, changed_by=by)
    )
    return deal


def move_deal_to_stage(
    session: Session,
    deal: Deal,
    stage: Stage,
    *,
    now: datetime,
    by: User | None = None,
    lost_reason: str | None = None,
) -> DealStageChange | None:
    """Move a deal to another stage of its pipeline; returns the change, or None if it was already there."""
    if stage.pipeline_id != deal.pipeline_id:
        raise DomainError(f"stage {stage.name!r} is not in the deal's pipeline")
    if stage.id == deal.stage_id:
        return None
    change = DealStageChange(
        deal=deal, from_stage_id=deal.stage_id, to_stage_id=stage.id, changed_at=now, changed_by=by
    )
    session.add(change)
    deal.stage = stage
    deal.stage_entered_at = now
    deal.status = _STATUS_FOR_KIND[stage.kind]
    if deal.status == DealStatus.OPEN:
        deal.closed_at = None
        deal.lost_reason = None
    else:
        deal.closed_at = now
        if deal.status == DealStatus.LOST:
            deal.lost_reason = (lost_reason or "").strip() or deal.lost_reason
        else:
            deal.lost_reason = None
    session.flush()
    return change


def get_deal(session: Session, deal_id: int) -> Deal:
    deal = session.get(Deal, deal_id)
    if deal is None:
        raise NotFoundError(f"deal {deal_id} does not exist")
    return deal


def get_stage(session: Session, stage_id: int) -> Stage:
    stage = session.get(Stage, stage_id)
    if stage is None:
        raise NotFoundError(f"stage {stage_id} does not exist")
    return stage


def delete_pipeline(session: Session, pipeline: Pipeline) -> None:
    """Remove a pipeline (and its stages); refused while any deal is in it."""
    if session.scalar(select(Deal.id).where(Deal.pipeline_id == pipeline.id).limit(1)) is not None:
        raise DomainError(f"pipeline {pipeline.name!r} still has deals: move or delete them first")
    session.delete(pipeline)
    session.flush()


def delete_stage(session: Session, stage: Stage) -> None:
    """Remove a stage; refused while any deal is in it (move them with move_deal_to_stage first)."""
    if session.scalar(select(Deal.id).where(Deal.stage_id == stage.id).limit(1)) is not None:
        raise DomainError(f"stage {stage.name!r} still has deals: move them first")
    session.delete(stage)
    session.flush()
