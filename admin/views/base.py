"""What every panel view shares: the login guard, typed `expose`/`action`, and the model-view base class.

`ThreadlineModelView` applies the role rules to Flask-Admin's list/create/edit/delete (admin.permissions),
offers managers a bulk "Reassign owner" (models.ownership), and writes CSV exports in the request, cell by
cell through models.spreadsheet (no cell a spreadsheet would run). Subclasses are configured by class
attributes only (columns, filters, forms), and write through models' domain operations.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar, cast

from flask import Response, abort, flash, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_admin import expose as _expose
from flask_admin.actions import action as _action
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla import typefmt as sqla_typefmt
from flask_admin.model.template import DeleteRowAction, EditRowAction
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.utils import secure_filename
from werkzeug.wrappers import Response as BaseResponse

from admin import auth, permissions
from admin.context import db, now
from admin.formatting import fmt_datetime, fmt_money
from admin.words import humanize
from models.errors import DomainError
from models.ownership import reassign_owner
from models.schema import User
from models.spreadsheet import SafeCsvWriter

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., Any])
Result = TypeVar("Result")


def expose(url: str = "/", methods: tuple[str, ...] = ("GET",)) -> Callable[[ViewFunction], ViewFunction]:
    """flask_admin.expose, typed (Flask-Admin ships no type information that mypy can use here)."""
    return cast(Callable[[ViewFunction], ViewFunction], _expose(url, methods))


def action(name: str, text: str, confirmation: str | None = None) -> Callable[[ViewFunction], ViewFunction]:
    return cast(Callable[[ViewFunction], ViewFunction], _action(name, text, confirmation))


def commit(operation: Callable[[Session], Result], *, failure: str = "") -> Result | None:
    """Run a models operation in the request's session and commit it. A DomainError (the user's mistake)
    rolls everything back and is shown to the user, after `failure`; the answer is then None."""
    session = db()
    try:
        result = operation(session)
        session.commit()
    except DomainError as exc:
        session.rollback()
        flash(f"{failure}{exc}", "error")
        return None
    return result


class LoginRequired:
    """Every page requires a logged-in user; logged-out visitors go to the login page, others get 403."""

    def is_accessible(self) -> bool:
        return permissions.is_logged_in()

    def inaccessible_callback(self, name: Any, **kwargs: Any) -> BaseResponse:
        if not permissions.is_logged_in():
            return auth.login_redirect()
        abort(403)


class GuardedView(LoginRequired, BaseView):  # type: ignore[misc]
    def page(self, template: str, **context: Any) -> str:
        return cast(str, self.render(template, **context))


class AdminOnlyView(GuardedView):
    def is_accessible(self) -> bool:
        return permissions.is_admin()


class GuardedIndexView(LoginRequired, AdminIndexView):  # type: ignore[misc]
    def page(self, template: str, **context: Any) -> str:
        return cast(str, self.render(template, **context))


# ---- column formatters shared by the lists --------------------------------------------------------------


def record_link(endpoint: str, label_attr: str) -> Callable[..., Markup]:
    """A list column showing the record's name as a link to its record page."""

    def format_(view: Any, context: Any, model: Any, name: str) -> Markup:
        url = url_for(endpoint, record_id=model.id)
        return Markup('<a href="{}">{}</a>').format(url, getattr(model, label_attr) or f"#{model.id}")

    return format_


def related_link(endpoint: str, relation: str, label_attr: str) -> Callable[..., Markup | str]:
    """A list column linking to a related record's page (a task's deal, an activity's company)."""

    def format_(view: Any, context: Any, model: Any, name: str) -> Markup | str:
        related = getattr(model, relation)
        if related is None:
            return ""
        return Markup('<a href="{}">{}</a>').format(
            url_for(endpoint, record_id=related.id), getattr(related, label_attr)
        )

    return format_


def owner_name(view: Any, context: Any, model: Any, name: str) -> str:
    owner = getattr(model, name)
    return owner.name if owner is not None else ""


# ---- the model-view base -------------------------------------------------------------------------------


class ThreadlineModelView(LoginRequired, ModelView):  # type: ignore[misc]
    """Login required; per-role create/edit/delete; bulk owner reassignment for managers and admins."""

    list_template = "threadline/model_list.html"
    create_template = "threadline/model_create.html"
    edit_template = "threadline/model_edit.html"
    quick_add: str | None = None
    """The quick-add form (admin.views.quick) that replaces Flask-Admin's create form for people."""
    record_page: str | None = None
    """The record page a save opens (instead of the list)."""
    page_size = 20
    can_set_page_size = True
    can_export = True
    export_max_rows = 50_000
    can_view_details = False
    column_display_pk = False
    named_filter_urls = True  # readable, stable links such as ?flt1_stage_equals=3 (the board uses them)
    owner_field = "owner"
    column_type_formatters = {
        **sqla_typefmt.DEFAULT_FORMATTERS,
        datetime: lambda view, value, name: fmt_datetime(value),
        Decimal: lambda view, value, name: fmt_money(value),
    }
    column_type_formatters_export = {
        **sqla_typefmt.EXPORT_FORMATTERS,
        datetime: lambda view, value, name: value.isoformat() if value else "",
    }

    # the can_* flags are read per request, so they follow the logged-in user's role
    @property  # type: ignore[override]
    def can_delete(self) -> bool:
        return permissions.is_manager_or_admin()

    @property  # type: ignore[override]
    def can_create(self) -> bool:
        return permissions.is_logged_in()

    @property  # type: ignore[override]
    def can_edit(self) -> bool:
        return permissions.is_logged_in()

    def row_writable(self, model: Any) -> bool:
        return permissions.can_write(model)

    # labels from column names in people's words: "last_activity_at" -> "Last activity" (lists and forms)
    def _prettify_name(self, name: str) -> str:
        return humanize(name)

    def prettify_name(self, name: str) -> str:
        return humanize(name)

    def _get_filter_groups(self) -> Any:
        # option lists (users, stages, pipelines) change while the app runs: fresh options per request,
        # into a copy (the cached groups are shared by every request and thread)
        groups = super()._get_filter_groups()
        if not groups:
            return groups
        for items in groups.values():
            for item in items:
                flt = self._filters[item["index"]]
                if callable(flt.options):
                    item["options"] = [(str(k), str(v)) for k, v in flt.get_options(self) or []] or None
        return groups

    def row_action_allowed(self, row_action: Any, row: Any) -> bool:
        """Used by the list template: hide edit/delete buttons on rows the user may not change."""
        if isinstance(row_action, EditRowAction | DeleteRowAction):
            return self.row_writable(row)
        return True

    def is_action_allowed(self, name: str) -> bool:
        if name == "reassign":
            return permissions.is_manager_or_admin() and hasattr(self.model, "owner_id")
        return bool(super().is_action_allowed(name))

    @expose("/new/", methods=("GET", "POST"))
    def create_view(self) -> Any:
        if request.method == "GET" and self.quick_add is not None:
            wanted: dict[str, Any] = {k: v for k, v in request.args.items() if k.endswith("_id")}
            return redirect(url_for(self.quick_add, **wanted))
        return super().create_view()

    def get_save_return_url(self, model: Any, is_created: bool = False) -> str:
        if self.record_page is not None and model is not None and getattr(model, "id", None) is not None:
            return url_for(self.record_page, record_id=model.id)
        return str(super().get_save_return_url(model, is_created))

    @expose("/edit/", methods=("GET", "POST"))
    def edit_view(self) -> Any:
        record_id = request.args.get("id")
        if record_id is not None:
            model = self.get_one(record_id)
            if model is not None and not self.row_writable(model):
                abort(403)
        return super().edit_view()

    @expose("/delete/", methods=("POST",))
    def delete_view(self) -> Any:
        if not self.can_delete:
            abort(403)
        record_id = request.form.get("id")
        if record_id is not None:
            model = self.get_one(record_id)
            if model is not None and not self.row_writable(model):
                abort(403)
        return super().delete_view()

    def create_form(self, obj: Any = None) -> Any:
        form = super().create_form(obj)
        self._restrict_owner_field(form, creating=True)
        return form

    def edit_form(self, obj: Any = None) -> Any:
        form = super().edit_form(obj)
        self._restrict_owner_field(form, creating=False)
        return form

    def _restrict_owner_field(self, form: Any, *, creating: bool) -> None:
        # a rep cannot give a record to someone else: the field is not even offered
        if self.owner_field in form and not permissions.is_manager_or_admin():
            del form[self.owner_field]
        elif creating and self.owner_field in form and request.method == "GET":
            form[self.owner_field].data = permissions.user()

    def on_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        if is_created and hasattr(model, "created_at") and model.created_at is None:
            model.created_at = now()
        if not permissions.is_manager_or_admin() and hasattr(model, f"{self.owner_field}_id"):
            if is_created:
                setattr(model, self.owner_field, permissions.user())
            elif not self.row_writable(model):
                raise DomainError("you can only change records you own")

    def handle_view_exception(self, exc: Exception) -> bool:
        if isinstance(exc, DomainError):
            flash(str(exc), "error")
            return True
        return bool(super().handle_view_exception(exc))

    # ---- CSV export ------------------------------------------------------------------------------------

    def _export_csv(self, return_url: Any) -> BaseResponse:
        """The filtered list as CSV, written while the request's session is open (Flask-Admin's own export
        streams after the session is gone, so a lazily loaded column failed after the header row), and every
        cell through models.spreadsheet."""
        _count, rows = self._export_data()
        out = io.StringIO()
        writer = SafeCsvWriter(out, lineterminator="\r\n")
        writer.writerow(str(title) for _name, title in self._export_columns)
        for row in rows:
            writer.writerow(self.get_export_value(row, name) for name, _title in self._export_columns)
        filename = secure_filename(self.get_export_name(export_type="csv"))
        return Response(
            out.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment;filename={filename}"},
        )

    # ---- bulk reassignment -----------------------------------------------------------------------------

    @action("reassign", "Reassign owner")
    def action_reassign(self, ids: list[str]) -> BaseResponse:
        return redirect(url_for(".reassign_view", ids=",".join(ids)))

    @expose("/reassign/", methods=("GET", "POST"))
    def reassign_view(self) -> Any:
        if not permissions.is_manager_or_admin() or not hasattr(self.model, "owner_id"):
            abort(403)
        ids = [int(i) for i in (request.values.get("ids") or "").split(",") if i.strip().isdigit()]
        session = db()
        users = list(session.scalars(select(User).where(User.active.is_(True)).order_by(User.name)))
        if request.method == "POST":
            owner_id = request.form.get("owner_id", "")
            owner = session.get(User, int(owner_id)) if owner_id.isdigit() else None
            if owner is None:
                flash("Nothing reassigned: choose an active user as the new owner", "error")
            else:
                count = commit(
                    lambda s: reassign_owner(s, self.model, ids, owner), failure="Nothing reassigned: "
                )
                if count is not None:
                    flash(f"{count} record(s) now owned by {owner.name}.", "success")
                    return redirect(self.get_url(".index_view"))
        return self.render(
            "threadline/reassign.html", ids=",".join(map(str, ids)), count=len(ids), users=users
        )


class AdminModelView(ThreadlineModelView):
    """Configuration tables only admins see: no export, no owners."""

    can_export = False

    def is_accessible(self) -> bool:
        return permissions.is_admin()

    def row_writable(self, model: Any) -> bool:
        return permissions.is_admin()
