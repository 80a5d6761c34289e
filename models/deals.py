"""Deals and pipelines: creating deals and moving them between stages.

`move_deal_to_stage` is the one way a deal changes stage, whether the board, a form, an import or a script
asks: it records the stage history and keeps status and closed_at consistent with the stage's kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


# ---- the pipeline editor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageEdit:
    """One stage as the pipeline editor submits it."""

    stage_id: int
    name: str
    probability: int
    stall_days: int | None
    kind: StageKind
    alerts_excluded: bool


def save_pipeline(session: Session, pipeline: Pipeline, *, name: str, stages: Sequence[StageEdit]) -> None:
    """Rename a pipeline and its stages, set their probability, stall days, kind and alert exclusion, and put
    them in the order given (every stage of the pipeline, once). A stage holding deals keeps its kind (moving
    its deals would be needed to keep their status true). Raises DomainError with what is wrong."""
    name = name.strip()
    if not name:
        raise DomainError("a pipeline needs a name")
    clash = session.scalar(select(Pipeline.id).where(func.lower(Pipeline.name) == name.lower()))
    if clash is not None and clash != pipeline.id:
        raise DomainError(f"another pipeline is called {name!r}")
    by_id = {s.id: s for s in pipeline.stages}
    if sorted(e.stage_id for e in stages) != sorted(by_id):
        raise DomainError("the pipeline changed meanwhile: reload the page")
    names = [e.name.strip() for e in stages]
    if any(not n for n in names):
        raise DomainError("every stage needs a name")
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise DomainError("two stages cannot share a name")
    if not any(e.kind == StageKind.OPEN for e in stages):
        raise DomainError("a pipeline needs at least one open stage")
    for edit in stages:
        if not 0 <= edit.probability <= 100:
            raise DomainError(f"{edit.name.strip()}: win probability is between 0 and 100")
        if edit.stall_days is not None and not 1 <= edit.stall_days <= 3650:
            raise DomainError(f"{edit.name.strip()}: stalled after 1 to 3650 days")
        stage = by_id[edit.stage_id]
        if edit.kind != stage.kind and _holds_deals(session, stage):
            raise DomainError(
                f"{stage.name} holds deals: move them before making it a {edit.kind.value} stage"
            )
    pipeline.name = name
    # names are unique per pipeline: park every name first so a swap of two names never clashes mid-way
    for stage in by_id.values():
        stage.name = f"~renaming {stage.id}~"
    session.flush()
    for position, (edit, new_name) in enumerate(zip(stages, names, strict=True)):
        stage = by_id[edit.stage_id]
        stage.name = new_name
        stage.position = position
        stage.probability = edit.probability
        stage.stall_days = edit.stall_days
        stage.kind = edit.kind
        stage.alerts_excluded = edit.alerts_excluded
    session.flush()


def _holds_deals(session: Session, stage: Stage) -> bool:
    return session.scalar(select(Deal.id).where(Deal.stage_id == stage.id).limit(1)) is not None


def add_stage(
    session: Session, pipeline: Pipeline, *, name: str, kind: StageKind = StageKind.OPEN, probability: int = 0
) -> Stage:
    """A new stage at the end of the pipeline's open stages (before won and lost)."""
    name = name.strip()
    if not name:
        raise DomainError("a stage needs a name")
    if find_stage(pipeline, name) is not None:
        raise DomainError(f"{pipeline.name} already has a stage called {name!r}")
    stages = list(pipeline.stages)
    insert_at = next((i for i, s in enumerate(stages) if s.kind != StageKind.OPEN), len(stages))
    if kind != StageKind.OPEN:
        insert_at = len(stages)
    stage = Stage(name=name, kind=kind, probability=probability)
    stages.insert(insert_at, stage)
    pipeline.stages.append(stage)
    for position, each in enumerate(stages):
        each.position = position
    session.flush()
    return stage


def create_pipeline(session: Session, *, name: str, now: datetime) -> Pipeline:
    """A new pipeline with a first open stage and its Won and Lost stages."""
    name = name.strip()
    if not name:
        raise DomainError("a pipeline needs a name")
    if find_pipeline(session, name) is not None:
        raise DomainError(f"a pipeline called {name!r} exists already")
    position = (session.scalar(select(func.max(Pipeline.position))) or 0) + 1
    pipeline = Pipeline(name=name, position=position, created_at=now)
    for index, (stage_name, kind, probability) in enumerate(
        (("New", StageKind.OPEN, 10), ("Won", StageKind.WON, 100), ("Lost", StageKind.LOST, 0))
    ):
        pipeline.stages.append(Stage(name=stage_name, kind=kind, probability=probability, position=index))
    session.add(pipeline)
    session.flush()
    return pipeline


def count_deals_in_stage(session: Session, stage: Stage) -> int:
    return session.scalar(select(func.count(Deal.id)).where(Deal.stage_id == stage.id)) or 0


def remove_stage(
    session: Session, stage: Stage, *, move_to: Stage | None, now: datetime, by: User | None = None
) -> int:
    """Remove a stage; its deals first move to `move_to` (another stage of the same pipeline) through
    move_deal_to_stage, so each deal's stage history records the move. Returns how many deals moved.
    Raises DomainError when deals would be left without a stage, or the target is not a valid stage."""
    deals = list(session.scalars(select(Deal).where(Deal.stage_id == stage.id).order_by(Deal.id)))
    if deals:
        if move_to is None:
            raise DomainError(f"{stage.name} holds {len(deals)} deal(s): choose the stage they move to")
        if move_to.id == stage.id or move_to.pipeline_id != stage.pipeline_id:
            raise DomainError("choose another stage of the same pipeline for its deals")
    remaining = [s for s in stage.pipeline.stages if s.id != stage.id]
    if not any(s.kind == StageKind.OPEN for s in remaining):
        raise DomainError("a pipeline needs at least one open stage")
    for deal in deals:
        assert move_to is not None  # checked above: a stage holding deals needs a target
        move_deal_to_stage(session, deal, move_to, now=now, by=by)
    delete_stage(session, stage)
    for position, each in enumerate(remaining):
        each.position = position
    session.flush()
    return len(deals)
