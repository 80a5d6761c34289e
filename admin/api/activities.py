"""/api/v1/activities (notes, calls, meetings, completed tasks; emails as metadata) and /api/v1/tasks."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, fields, validate
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from admin.api.auth import api_user
from admin.api.lists import ListArgs, page_schema, paginate, record_or_404, resolve_user, since, words
from admin.context import db
from admin.permissions import privacy_policy
from models.privacy import body_access
from models.representations import ActivityOut, TaskOut, show_email_body
from models.schema import Activity, ActivityKind, Task

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


@tasks.route("/<int:task_id>")
class TaskById(MethodView):
    @tasks.response(200, TaskOut)
    def get(self, task_id: int) -> Task:
        """One task"""
        return get_task(task_id)
