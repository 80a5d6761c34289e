"""/api/v1/deals, /api/v1/pipelines and /api/v1/users (read)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from admin.api.auth import api_user, require_write
from admin.api.lists import (
    ListArgs,
    owner_for_write,
    page_schema,
    paginate,
    record_or_404,
    resolve_user,
    since,
    words,
)
from admin.api.problems import ApiProblem
from admin.api.writes import IDEMPOTENCY_DOC, committed
from admin.context import db, now
from models.deals import create_deal, move_deal_to_stage, parse_money
from models.errors import DomainError
from models.money import normalize_currency
from models.representations import DealOut, PipelineOut, UserOut
from models.schema import Company, Contact, Deal, DealStatus, Pipeline, Stage, User

T = TypeVar("T")

deals = Blueprint("deals", __name__, url_prefix="/api/v1/deals", description="Deals in pipelines")
pipelines = Blueprint("pipelines", __name__, url_prefix="/api/v1/pipelines", description="Pipelines, stages")
users = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Staff (read only)")


class DealArgs(ListArgs):
    pipeline = fields.String(metadata={"description": "pipeline id or name"})
    stage = fields.String(metadata={"description": "stage id or name"})
    status = fields.String(validate=validate.OneOf([s.value for s in DealStatus]))
    company = fields.Integer()
    contact = fields.Integer()


class DealIn(ma.Schema):
    class Meta:
        unknown = RAISE

    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    value = fields.String(metadata={"description": 'an amount with at most two decimals, e.g. "1200.50"'})
    currency = fields.String(metadata={"description": "ISO 4217 code (default: the team's)"})
    pipeline = fields.String(metadata={"description": "pipeline id or name (default: the first pipeline)"})
    stage = fields.String(metadata={"description": "stage id or name (default: the first open stage)"})
    company_id = fields.Integer(allow_none=True)
    contact_ids = fields.List(fields.Integer(), load_default=list)
    owner = fields.String(metadata={"description": "user id, email or `me` (default: the key's user)"})
    expected_close_on = fields.Date(allow_none=True)


class DealPatch(DealIn):
    title = fields.String(validate=validate.Length(min=1, max=300))
    contact_ids = fields.List(fields.Integer())
    lost_reason = fields.String(
        validate=validate.Length(max=500), metadata={"description": "with a lost stage"}
    )


def _field(name: str, action: Callable[[], T]) -> T:
    """Run a domain check, naming the body field when it refuses."""
    try:
        return action()
    except DomainError as exc:
        raise ApiProblem(422, str(exc), field=name) from None


def _related(body: dict[str, Any]) -> tuple[Company | None, list[Contact]]:
    company = None
    if body.get("company_id") is not None:
        company = db().get(Company, body["company_id"])
        if company is None:
            raise ApiProblem(422, f"No company {body['company_id']}.", field="company_id")
    contacts = []
    for contact_id in body.get("contact_ids") or []:
        contact = db().get(Contact, contact_id)
        if contact is None:
            raise ApiProblem(422, f"No contact {contact_id}.", field="contact_ids")
        contacts.append(contact)
    return company, contacts


def get_deal(deal_id: int) -> Deal:
    return record_or_404(Deal, deal_id)


def resolve_pipeline(value: str | int, *, field: str = "pipeline", where: str = "query") -> Pipeline:
    text = str(value).strip()
    found = (
        db().get(Pipeline, int(text))
        if text.isdigit()
        else db().scalar(select(Pipeline).where(func.lower(Pipeline.name) == text.lower()))
    )
    if found is None:
        raise ApiProblem(422, f"No pipeline {text!r}.", field=field, where=where)
    return found


def resolve_stage(
    value: str | int, pipeline: Pipeline | None, *, field: str = "stage", where: str = "query"
) -> Stage:
    """A stage by id, or by name (within `pipeline` when given; a name in several pipelines is ambiguous)."""
    text = str(value).strip()
    if text.isdigit():
        stage = db().get(Stage, int(text))
        if stage is None or (pipeline is not None and stage.pipeline_id != pipeline.id):
            raise ApiProblem(422, f"No stage {text!r}" + (f" in {pipeline.name}." if pipeline else "."),
                             field=field, where=where)  # fmt: skip
        return stage
    query = select(Stage).where(func.lower(Stage.name) == text.lower())
    if pipeline is not None:
        query = query.where(Stage.pipeline_id == pipeline.id)
    found = list(db().scalars(query))
    if len(found) != 1:
        problem = "is in several pipelines: give the pipeline too" if found else "does not exist"
        raise ApiProblem(422, f"Stage {text!r} {problem}.", field=field, where=where)
    return found[0]


@deals.route("")
class Deals(MethodView):
    @deals.arguments(DealArgs, location="query", unknown=RAISE)
    @deals.response(200, page_schema(DealOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List deals, newest first"""
        query = select(Deal).options(joinedload(Deal.stage), selectinload(Deal.contacts))
        pipeline = resolve_pipeline(args["pipeline"]) if "pipeline" in args else None
        if pipeline is not None:
            query = query.where(Deal.pipeline_id == pipeline.id)
        if "stage" in args:
            query = query.where(Deal.stage_id == resolve_stage(args["stage"], pipeline).id)
        if "status" in args:
            query = query.where(Deal.status == DealStatus(args["status"]))
        if "company" in args:
            query = query.where(Deal.company_id == args["company"])
        if "contact" in args:
            query = query.where(Deal.contacts.any(id=args["contact"]))
        if "owner" in args:
            query = query.where(Deal.owner_id == resolve_user(args["owner"]).id)
        if "q" in args:
            query = query.where(words(Deal.title, q=args["q"]))
        query = since(query, Deal.updated_at, args)
        return paginate(query, Deal.id, args)

    @committed
    @deals.doc(**IDEMPOTENCY_DOC)
    @deals.arguments(DealIn)
    @deals.response(201, DealOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Create a deal (its first stage-history entry is written with it)"""
        pipeline = resolve_pipeline(body["pipeline"], where="body") if "pipeline" in body else None
        stage = resolve_stage(body["stage"], pipeline, where="body") if "stage" in body else None
        company, contacts = _related(body)
        deal = create_deal(
            db(), title=body["title"], now=now(), pipeline=pipeline, stage=stage,
            value=_field("value", lambda: parse_money(body.get("value", "0"))),
            currency=_field("currency", lambda: normalize_currency(body.get("currency"))),
            company=company, contacts=contacts, owner=owner_for_write(body.get("owner")),
            expected_close_on=body.get("expected_close_on"), by=api_user(),
        )  # fmt: skip
        return deal, 201, {"Location": url_for("deals.DealById", deal_id=deal.id)}


@deals.route("/<int:deal_id>")
class DealById(MethodView):
    @deals.response(200, DealOut)
    def get(self, deal_id: int) -> Deal:
        """One deal"""
        return get_deal(deal_id)

    @committed
    @deals.arguments(DealPatch)
    @deals.response(200, DealOut)
    def patch(self, body: dict[str, Any], deal_id: int) -> Deal:
        """Change a deal; a new `stage` moves it through the stage-move operation (history, won/lost)"""
        deal = get_deal(deal_id)
        require_write(deal)
        if "stage" in body:
            stage = resolve_stage(body["stage"], deal.pipeline, where="body")
            _field("stage", lambda: move_deal_to_stage(
                db(), deal, stage, now=now(), by=api_user(), lost_reason=body.get("lost_reason")
            ))  # fmt: skip
        if "title" in body:
            deal.title = body["title"].strip()
        if "value" in body:
            deal.value = _field("value", lambda: parse_money(body["value"]))
        if "currency" in body:
            deal.currency = _field("currency", lambda: normalize_currency(body["currency"]))
        if "expected_close_on" in body:
            deal.expected_close_on = body["expected_close_on"]
        company, contacts = _related(body)
        if "company_id" in body:
            deal.company = company
        if "contact_ids" in body:
            deal.contacts[:] = contacts
        if "owner" in body:
            deal.owner = owner_for_write(body["owner"], current=deal)
        db().flush()
        return deal


@pipelines.route("")
class Pipelines(MethodView):
    @pipelines.response(200, PipelineOut(many=True))
    def get(self) -> list[Pipeline]:
        """Every pipeline with its stages, in board order"""
        query = (
            select(Pipeline).options(selectinload(Pipeline.stages)).order_by(Pipeline.position, Pipeline.id)
        )
        return list(db().scalars(query))


@pipelines.route("/<int:pipeline_id>")
class PipelineById(MethodView):
    @pipelines.response(200, PipelineOut)
    def get(self, pipeline_id: int) -> Pipeline:
        """One pipeline with its stages"""
        return record_or_404(Pipeline, pipeline_id)


class UserArgs(ListArgs):
    pass


@users.route("")
class Users(MethodView):
    @users.arguments(ListArgs, location="query", unknown=RAISE)
    @users.response(200, page_schema(UserOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List staff"""
        query = select(User)
        if "q" in args:
            query = query.where(words(User.name, User.email, q=args["q"]))
        return paginate(query, User.id, args)


@users.route("/<int:user_id>")
class UserById(MethodView):
    @users.response(200, UserOut)
    def get(self, user_id: int) -> User:
        """One member of staff"""
        return record_or_404(User, user_id)
