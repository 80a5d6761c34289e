"""The planned activities (calls, meetings, emails, to-dos: `Task` rows): the list and the edit form.

Every open task shows a *Mark done* button to whoever may change it (its assignee, managers, admins): one
click, a CSRF-protected POST to the record pages' completion endpoint, which goes through
models.activities.complete_task (the completion is logged on the task's deal and contact) and comes back to
the list. Tasks created here go through models.activities.create_task; a rep's tasks are assigned to them,
and a rep may delete a task assigned to them.
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask_admin.contrib.sqla.filters import IntEqualFilter
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup
from wtforms import fields, validators

from admin import permissions
from admin.context import now, team_tz
from admin.formatting import fmt_datetime, fmt_due, local_naive_to_utc
from admin.views.base import ThreadlineModelView, commit, owner_name, related_link
from admin.views.filters import UTCDateBetweenFilter, choices, user_options
from models.activities import KIND_WORDS, create_task
from models.schema import Task

DONE_FORM = Markup(
    '<form method="post" action="{action}" class="d-inline tl-done-form">'
    '<input type="hidden" name="csrf_token" value="{token}">'
    '<input type="hidden" name="next" value="{back}">'
    '<button type="submit" class="btn btn-sm btn-outline-success tl-done" '
    'aria-label="Mark {title} done">Mark done</button></form>'
)


def done_column(view: Any, context: Any, model: Task, name: str) -> Markup | str:
    """When the task was done, or the one-click button that marks it done (for those who may)."""
    if model.done_at is not None:
        return fmt_datetime(model.done_at)
    if not permissions.can_write(model):
        return ""
    return DONE_FORM.format(
        action=url_for("records.complete", task_id=model.id),
        token=generate_csrf(),
        back=request.full_path if request.query_string else request.path,
        title=model.title,
    )


class TaskView(ThreadlineModelView):
    quick_add = "quick.activity"
    owner_field = "assignee"
    column_list = (
        "kind",
        "title",
        "assignee",
        "due_at",
        "done_at",
        "deal",
        "contact",
        "company",
        "created_at",
    )
    column_labels = {
        "kind": "Type",
        "title": "Subject",
        "assignee": "Assigned to",
        "due_at": "Due",
        "done_at": "Done",
        "created_at": "Planned on",
    }
    column_sortable_list = ("title", ("assignee", "assignee.name"), "due_at", "done_at", "created_at")
    column_searchable_list = ("title",)
    column_default_sort = ("due_at", False)
    column_filters = (
        IntEqualFilter(Task.assignee_id, "Assignee", options=user_options),
        UTCDateBetweenFilter(Task.due_at, "Due"),
        UTCDateBetweenFilter(Task.done_at, "Done"),
    )
    column_formatters = {
        "kind": lambda v, c, m, n: KIND_WORDS[m.kind],
        "due_at": lambda v, c, m, n: fmt_due(m.due_at, m.has_due_time),
        "company": related_link("records.company", "company", "name"),
        "assignee": owner_name,
        "done_at": done_column,
        "deal": related_link("records.deal", "deal", "title"),
        "contact": related_link("records.contact", "contact", "name"),
    }
    column_formatters_export = {
        "assignee": lambda v, c, m, n: m.assignee.email if m.assignee else "",
        "deal": lambda v, c, m, n: m.deal.title if m.deal else "",
        "contact": lambda v, c, m, n: m.contact.name if m.contact else "",
    }
    form_columns = ("kind", "title", "notes", "due_at", "assignee", "deal", "contact")
    form_overrides = {"due_at": fields.DateTimeLocalField, "kind": fields.SelectField}
    form_args = {
        "kind": {
            "label": "Type",
            "coerce": str,
            "choices": choices([(k.value, word) for k, word in KIND_WORDS.items()]),
        },
        "due_at": {
            # the browser's date-time picker; typed times are the team's local time
            "format": ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
            "tz": team_tz,
            "validators": [validators.Optional()],
            "description": "in your team's time zone",
        },
    }
    form_ajax_refs = {
        "deal": {"fields": ("title",), "page_size": 10, "placeholder": "Type to find a deal"},
        "contact": {"fields": ("name",), "page_size": 10, "placeholder": "Type to find a contact"},
        "assignee": {"fields": ("name", "email"), "page_size": 10, "placeholder": "Type a name"},
    }

    @property  # type: ignore[override]
    def can_delete(self) -> bool:
        # anyone logged in; row_writable limits a rep to the tasks assigned to them
        return permissions.is_logged_in()

    def create_model(self, form: Any) -> Any:
        me = permissions.user()
        assignee = form.assignee.data if "assignee" in form and permissions.is_manager_or_admin() else me
        created = commit(
            lambda session: create_task(
                session,
                title=form.title.data or "",
                now=now(),
                due_at=local_naive_to_utc(form.due_at.data),
                assignee=assignee,
                deal=form.deal.data,
                contact=form.contact.data,
                notes=form.notes.data or "",
                kind=form.kind.data or "todo",
            )
        )
        return created or False

    def on_model_change(self, form: Any, model: Task, is_created: bool) -> None:
        model.due_at = local_naive_to_utc(model.due_at)
        super().on_model_change(form, model, is_created)
