"""/api/v1/activities (notes, calls, meetings, completed tasks; emails as metadata) and /api/v1/tasks."""

from __future__ import annotations

from typing import Any, TypeVar

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

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
from admin.permissions import privacy_policy
from models.activities import MANUAL_KINDS, complete_task, create_task, log_activity
from models.privacy import body_access
from models.representations import ActivityOut, TaskOut, show_email_body
from models.schema import Activity, ActivityKind, Company, Contact, Deal, PlannedKind, Task

T = TypeVar("T")

activities = Blueprint(
    "activities", __name__, url_prefix="/api/v1/activities", description="Timeline entries (emails read only)"
)
tasks = Blueprint("tasks", __name__, url_prefix="/api/v1/tasks", description="Planned activities")


class ActivityArgs(ListArgs):
    kind = fields.String(validate=validate.OneOf([k.value for k in ActivityKind]))
    deal = fields.Integer()
    contact = fields.Integer()
    company = fields.Integer()


class TaskArgs(ListArgs):
    status = fields.String(validate=validate.OneOf(["open", "done"]))
    deal = fields.Integer()
    contact = fields.Integer()


class ActivityIn(ma.Schema):
    """A note, call or meeting to log (emails come from the mail sync only)."""

    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf([k.value for k in MANUAL_KINDS]))
    subject = fields.String(load_default="", validate=validate.Length(max=998))
    body = fields.String(load_default="", validate=validate.Length(max=100_000))
    occurred_at = fields.AwareDateTime(metadata={"description": "default: now"})
    deal_id = fields.Integer(allow_none=True)
    company_id = fields.Integer(allow_none=True)
    contact_ids = fields.List(fields.Integer(), load_default=list)


class TaskIn(ma.Schema):
    class Meta:
        unknown = RAISE

    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    kind = fields.Enum(PlannedKind, by_value=True, load_default=PlannedKind.TODO)
    notes = fields.String(load_default="", validate=validate.Length(max=100_000))
    due_at = fields.AwareDateTime(allow_none=True)
    owner = fields.String(
        metadata={"description": "assignee: user id, email or `me` (default: the key's user)"}
    )
    deal_id = fields.Integer(allow_none=True)
    contact_id = fields.Integer(allow_none=True)
    company_id = fields.Integer(allow_none=True)


class TaskPatch(ma.Schema):
    class Meta:
        unknown = RAISE

    done = fields.Boolean(metadata={"description": "true marks it done (logged on its deal and contact)"})
    title = fields.String(validate=validate.Length(min=1, max=500))
    notes = fields.String(validate=validate.Length(max=100_000))
    due_at = fields.AwareDateTime(allow_none=True)
    owner = fields.String()


def _linked(model: type[T], body: dict[str, Any], name: str) -> T | None:
    record_id = body.get(name)
    if record_id is None:
        return None
    record = db().get(model, record_id)
    if record is None:
        raise ApiProblem(422, f"No {model.__name__.lower()} {record_id}.", field=name)
    return record


def get_activity(activity_id: int) -> Activity:
    return record_or_404(Activity, activity_id)


def with_readable_bodies(activities: list[Activity]) -> list[Activity]:
    """Mark the emails whose text the key's user may read (models.privacy owns the rule)."""
    access = body_access(db(), api_user(), privacy_policy())
    for activity in activities:
        if activity.kind == ActivityKind.EMAIL and access.can_read(activity):
            show_email_body(activity)
    return activities


def get_task(task_id: int) -> Task:
    return record_or_404(Task, task_id)


@activities.route("")
class Activities(MethodView):
    @activities.arguments(ActivityArgs, location="query", unknown=RAISE)
    @activities.response(200, page_schema(ActivityOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List activities, newest first (owner: the author)"""
        query = select(Activity).options(selectinload(Activity.contacts))
        if "kind" in args:
            query = query.where(Activity.kind == ActivityKind(args["kind"]))
        if "deal" in args:
            query = query.where(Activity.deal_id == args["deal"])
        if "company" in args:
            query = query.where(Activity.company_id == args["company"])
        if "contact" in args:
            query = query.where(Activity.contacts.any(id=args["contact"]))
        if "owner" in args:
            query = query.where(Activity.author_id == resolve_user(args["owner"]).id)
        if "q" in args:  # words of the text only where the key's user may read it
            access = body_access(db(), api_user(), privacy_policy())
            query = query.where(
                or_(
                    words(Activity.subject, q=args["q"]),
                    and_(access.readable(), words(Activity.body, q=args["q"])),
                )
            )
        query = since(query, Activity.created_at, args)
        page = paginate(query, Activity.id, args)
        with_readable_bodies(page["data"])
        return page

    @committed
    @activities.doc(**IDEMPOTENCY_DOC)
    @activities.arguments(ActivityIn)
    @activities.response(201, ActivityOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Log a note, call or meeting on a deal, company or contacts"""
        contacts = [_linked(Contact, {"contact_ids": i}, "contact_ids") for i in body["contact_ids"]]
        moment = now()
        activity = log_activity(
            db(), kind=body["kind"], occurred_at=body.get("occurred_at") or moment, now=moment,
            subject=body["subject"], body=body["body"], author=api_user(),
            contacts=[c for c in contacts if c is not None], company=_linked(Company, body, "company_id"),
            deal=_linked(Deal, body, "deal_id"),
        )  # fmt: skip
        return activity, 201, {"Location": url_for("activities.ActivityById", activity_id=activity.id)}


@activities.route("/<int:activity_id>")
class ActivityById(MethodView):
    @activities.response(200, ActivityOut)
    def get(self, activity_id: int) -> Activity:
        """One activity"""
        return with_readable_bodies([get_activity(activity_id)])[0]


@tasks.route("")
class Tasks(MethodView):
    @tasks.arguments(TaskArgs, location="query", unknown=RAISE)
    @tasks.response(200, page_schema(TaskOut))
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List tasks, newest first (owner: the assignee)"""
        query = select(Task)
        if "status" in args:
            query = query.where(
                Task.done_at.is_(None) if args["status"] == "open" else Task.done_at.is_not(None)
            )
        if "deal" in args:
            query = query.where(Task.deal_id == args["deal"])
        if "contact" in args:
            query = query.where(Task.contact_id == args["contact"])
        if "owner" in args:
            query = query.where(Task.assignee_id == resolve_user(args["owner"]).id)
        if "q" in args:
            query = query.where(words(Task.title, q=args["q"]))
        query = since(query, Task.updated_at, args)
        return paginate(query, Task.id, args)

    @committed
    @tasks.doc(**IDEMPOTENCY_DOC)
    @tasks.arguments(TaskIn)
    @tasks.response(201, TaskOut)
    def post(self, body: dict[str, Any]) -> Any:
        """Plan an activity (call, meeting, email or to-do)"""
        task = create_task(
            db(), title=body["title"], now=now(), due_at=body.get("due_at"),
            assignee=owner_for_write(body.get("owner")), deal=_linked(Deal, body, "deal_id"),
            contact=_linked(Contact, body, "contact_id"), company=_linked(Company, body, "company_id"),
            notes=body["notes"], kind=body["kind"],
        )  # fmt: skip
        return task, 201, {"Location": url_for("tasks.TaskById", task_id=task.id)}


@tasks.route("/<int:task_id>")
class TaskById(MethodView):
    @tasks.response(200, TaskOut)
    def get(self, task_id: int) -> Task:
        """One task"""
        return get_task(task_id)

    @committed
    @tasks.arguments(TaskPatch)
    @tasks.response(200, TaskOut)
    def patch(self, body: dict[str, Any], task_id: int) -> Task:
        """Change a task, or mark it done"""
        task = get_task(task_id)
        require_write(task)
        if "title" in body:
            task.title = body["title"].strip()
        if "notes" in body:
            task.notes = body["notes"]
        if "due_at" in body:
            task.due_at = body["due_at"]
        if "owner" in body:
            task.assignee = owner_for_write(body["owner"], current=task)
        if body.get("done"):
            complete_task(db(), task, now=now(), by=api_user())
        elif body.get("done") is False:
            task.done_at = None
        db().flush()
        return task
