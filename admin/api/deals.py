"""/api/v1/deals, /api/v1/pipelines and /api/v1/users (read)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload, selectinload

from admin.api.lists import ListArgs, page_schema, paginate, record_or_404, resolve_user, since, words
from admin.api.problems import ApiProblem
from admin.context import db
from models.representations import DealOut, PipelineOut, UserOut
from models.schema import Deal, DealStatus, Pipeline, Stage, User

deals = Blueprint("deals", __name__, url_prefix="/api/v1/deals", description="Deals in pipelines")
pipelines = Blueprint("pipelines", __name__, url_prefix="/api/v1/pipelines", description="Pipelines, stages")
users = Blueprint("users", __name__, url_prefix="/api/v1/users", description="Staff (read only)")


class DealArgs(ListArgs):
    pipeline = fields.String(metadata={"description": "pipeline id or name"})
    stage = fields.String(metadata={"description": "stage id or name"})
    status = fields.String(validate=validate.OneOf([s.value for s in DealStatus]))
    company = fields.Integer()
    contact = fields.Integer()


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


@deals.route("/<int:deal_id>")
class DealById(MethodView):
    @deals.response(200, DealOut)
    def get(self, deal_id: int) -> Deal:
        """One deal"""
        return get_deal(deal_id)


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
