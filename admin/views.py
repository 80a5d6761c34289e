"""The Flask-Admin list/edit views over the CRM's tables, configured by class attributes, with the role rules.

Admins see and change everything; managers all sales records (and reassign owners); reps read everything and
edit only what they own. The server checks every write (403), and the pages hide what a role cannot do.
Deals never change stage here: creating one goes through models.deals.create_deal, moving one happens on the
deal page or the board (models.deals.move_deal_to_stage).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

from flask import abort, flash, has_request_context, redirect, request, url_for
from flask_admin import AdminIndexView, BaseView
from flask_admin import expose as _expose
from flask_admin.actions import action as _action
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla import typefmt as sqla_typefmt
from flask_admin.contrib.sqla.filters import (
    BooleanEqualFilter,
    DateBetweenFilter,
    FilterEqual,
    FilterLike,
    IntEqualFilter,
)
from flask_admin.model.template import DeleteRowAction, EditRowAction
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session
from werkzeug.wrappers import Response as BaseResponse
from wtforms import fields, validators
from wtforms.fields.choices import SelectChoice

from admin import auth
from admin.app import db, now, state
from models.contacts import add_contact_email, normalize_domain, normalize_email
from models.deals import create_deal, default_pipeline, parse_money
from models.errors import DomainError
from models.schema import (
    Activity,
    ActivityKind,
    Company,
    CompanyDomain,
    Contact,
    Deal,
    DealStatus,
    Direction,
    Pipeline,
    Role,
    Stage,
    StageKind,
    Task,
    User,
)
from models.users import hash_password

ViewFunction = TypeVar("ViewFunction", bound=Callable[..., Any])


def expose(url: str = "/", methods: tuple[str, ...] = ("GET",)) -> Callable[[ViewFunction], ViewFunction]:
    """flask_admin.expose, typed (Flask-Admin ships no type information that mypy can use here)."""
    return cast(Callable[[ViewFunction], ViewFunction], _expose(url, methods))


def action(name: str, text: str, confirmation: str | None = None) -> Callable[[ViewFunction], ViewFunction]:
    return cast(Callable[[ViewFunction], ViewFunction], _action(name, text, confirmation))


def team_tz() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(state().settings.team.timezone)


def local_naive_to_utc(value: datetime | None) -> datetime | None:
    """A date-time typed in a form is the team's local time; the database keeps UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=team_tz())
    return value.astimezone(UTC)


def fmt_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(team_tz()).strftime("%Y-%m-%d %H:%M")


def fmt_money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


class LoginRequired:
    """Every page requires a logged-in user; logged-out visitors go to the login page, others get 403."""

    def is_accessible(self) -> bool:
        return auth.is_logged_in()

    def inaccessible_callback(self, name: Any, **kwargs: Any) -> BaseResponse:
        if not auth.is_logged_in():
            return auth.login_redirect()
        abort(403)


class GuardedView(LoginRequired, BaseView):  # type: ignore[misc]
    def page(self, template: str, **context: Any) -> str:
        return cast(str, self.render(template, **context))


class AdminOnlyView(GuardedView):
    def is_accessible(self) -> bool:
        return auth.is_admin()


class GuardedIndexView(LoginRequired, AdminIndexView):  # type: ignore[misc]
    def page(self, template: str, **context: Any) -> str:
        return cast(str, self.render(template, **context))


# ---- filters -------------------------------------------------------------------------------------------


class UTCDateBetweenFilter(DateBetweenFilter):  # type: ignore[misc]
    """A day range in the team's time zone applied to a UTC timestamp column."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        start, end = value
        tz = team_tz()
        low = datetime.combine(start, time.min, tz).astimezone(UTC)
        high = datetime.combine(end + timedelta(days=1), time.min, tz).astimezone(UTC)
        column = self.get_column(alias)
        return query.filter(column >= low, column < high)


class EnumValueFilter(FilterEqual):  # type: ignore[misc]
    def __init__(self, column: Any, name: str, enum_class: Any) -> None:
        self.enum_class = enum_class
        super().__init__(column, name, options=[(m.value, m.value.title()) for m in enum_class])

    def clean(self, value: str) -> Any:
        return self.enum_class(value)

    def validate(self, value: str) -> bool:
        return value in {m.value for m in self.enum_class}


def _user_options() -> list[tuple[str, str]]:
    if not has_request_context():  # Flask-Admin also asks once at start-up; real options come per request
        return []
    return [(str(u.id), u.name) for u in db().scalars(select(User).order_by(User.name))]


def _stage_options() -> list[tuple[str, str]]:
    if not has_request_context():
        return []
    rows = db().execute(
        select(Stage.id, Stage.name, Pipeline.name).join(Pipeline).order_by(Pipeline.position, Stage.position)
    )
    return [(str(sid), f"{pname} / {sname}") for sid, sname, pname in rows]


def _pipeline_options() -> list[tuple[str, str]]:
    if not has_request_context():
        return []
    return [(str(p.id), p.name) for p in db().scalars(select(Pipeline).order_by(Pipeline.position))]


def choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    # WTForms 3.3 deprecates (value, label) tuples, and warnings are errors in the test suite
    return [SelectChoice(value, label) for value, label in pairs]


# ---- shared base ---------------------------------------------------------------------------------------


def _record_link(endpoint: str, label_attr: str) -> Any:
    def format_(view: Any, context: Any, model: Any, name: str) -> Markup:
        url = url_for(endpoint, record_id=model.id)
        return Markup('<a href="{}">{}</a>').format(url, getattr(model, label_attr) or f"#{model.id}")

    return format_


def _owner_name(view: Any, context: Any, model: Any, name: str) -> str:
    owner = getattr(model, name)
    return owner.name if owner is not None else ""


class ThreadlineModelView(LoginRequired, ModelView):  # type: ignore[misc]
    """Login required; per-role create/edit/delete; bulk owner reassignment for managers and admins."""

    list_template = "threadline/model_list.html"
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
        return auth.is_manager_or_admin()

    @property  # type: ignore[override]
    def can_create(self) -> bool:
        return auth.is_logged_in()

    @property  # type: ignore[override]
    def can_edit(self) -> bool:
        return auth.is_logged_in()

    def row_writable(self, model: Any) -> bool:
        return auth.can_write(model)

    def _get_filter_groups(self) -> Any:
        # option lists (users, stages, pipelines) change while the app runs: rebuild them per request
        for group in (self._filter_groups or {}).values():
            for item in group.filters:
                flt = self._filters[item["index"]]
                if callable(flt.options):
                    item["options"] = flt.get_options(self) or None
        return super()._get_filter_groups()

    def row_action_allowed(self, row_action: Any, row: Any) -> bool:
        """Used by the list template: hide edit/delete buttons on rows the user may not change."""
        if isinstance(row_action, EditRowAction | DeleteRowAction):
            return self.row_writable(row)
        return True

    def is_action_allowed(self, name: str) -> bool:
        if name == "reassign":
            return auth.is_manager_or_admin() and hasattr(self.model, "owner_id")
        return bool(super().is_action_allowed(name))

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
        if self.owner_field in form and not auth.is_manager_or_admin():
            del form[self.owner_field]
        elif creating and self.owner_field in form and request.method == "GET":
            form[self.owner_field].data = auth.user()

    def on_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        if is_created and hasattr(model, "created_at") and model.created_at is None:
            model.created_at = now()
        if not auth.is_manager_or_admin() and hasattr(model, f"{self.owner_field}_id"):
            if is_created:
                setattr(model, self.owner_field, auth.user())
            elif not self.row_writable(model):
                raise DomainError("you can only change records you own")

    def handle_view_exception(self, exc: Exception) -> bool:
        if isinstance(exc, DomainError):
            flash(str(exc), "error")
            return True
        return bool(super().handle_view_exception(exc))

    @action("reassign", "Reassign owner")
    def action_reassign(self, ids: list[str]) -> BaseResponse:
        return redirect(url_for(".reassign_view", ids=",".join(ids)))

    @expose("/reassign/", methods=("GET", "POST"))
    def reassign_view(self) -> Any:
        if not auth.is_manager_or_admin() or not hasattr(self.model, "owner_id"):
            abort(403)
        ids = [int(i) for i in (request.values.get("ids") or "").split(",") if i.strip().isdigit()]
        users = list(db().scalars(select(User).where(User.active.is_(True)).order_by(User.name)))
        if request.method == "POST":
            owner_id = request.form.get("owner_id", "")
            owner = db().get(User, int(owner_id)) if owner_id.isdigit() else None
            if owner is None or not owner.active:
                flash("Choose an active user as the new owner.", "error")
            else:
                records = db().scalars(select(self.model).where(self.model.id.in_(ids))).all()
                for record in records:
                    record.owner = owner
                db().commit()
                flash(f"{len(records)} record(s) now owned by {owner.name}.", "success")
                return redirect(self.get_url(".index_view"))
        return self.render(
            "threadline/reassign.html", ids=",".join(map(str, ids)), count=len(ids), users=users
        )


# ---- sales records --------------------------------------------------------------------------------------


class CompanyView(ThreadlineModelView):
    column_list = ("name", "domains", "owner", "created_at", "last_activity_at")
    column_sortable_list = ("name", ("owner", "owner.name"), "created_at", "last_activity_at")
    column_searchable_list = ("name", "domains.domain")
    column_default_sort = ("name", False)
    column_formatters = {
        "name": _record_link("records.company", "name"),
        "domains": lambda v, c, m, n: ", ".join(d.domain for d in m.domains),
        "owner": _owner_name,
    }
    column_formatters_export = {"domains": lambda v, c, m, n: " ".join(d.domain for d in m.domains)}
    form_columns = ("name", "domain_names", "owner")
    form_extra_fields = {
        "domain_names": fields.StringField(
            "Domains", description="Email domains of this company, comma separated"
        )
    }
    form_ajax_refs = {"owner": {"fields": ("name", "email"), "page_size": 10}}

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None:
            form.domain_names.data = ", ".join(d.domain for d in model.domains)

    def on_model_change(self, form: Any, model: Company, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        wanted = [normalize_domain(d) for d in (form.domain_names.data or "").replace(";", ",").split(",")]
        wanted = [d for d in wanted if d]
        for domain in wanted:
            if "." not in domain or " " in domain:
                raise DomainError(f"{domain!r} is not a domain name")
        with db().no_autoflush:
            taken = (
                db()
                .scalars(
                    select(CompanyDomain).where(
                        CompanyDomain.domain.in_(wanted), CompanyDomain.company_id != model.id
                    )
                )
                .all()
                if model.id is not None
                else db().scalars(select(CompanyDomain).where(CompanyDomain.domain.in_(wanted))).all()
            )
        if taken:
            raise DomainError(f"{taken[0].domain} already belongs to {taken[0].company.name}")
        existing = {d.domain: d for d in model.domains}
        model.domains[:] = [existing.get(d) or CompanyDomain(domain=d) for d in dict.fromkeys(wanted)]


class ContactView(ThreadlineModelView):
    column_list = ("name", "emails", "company", "owner", "lead_source", "created_at", "last_activity_at")
    column_sortable_list = (
        "name",
        ("company", "company.name"),
        ("owner", "owner.name"),
        "lead_source",
        "created_at",
        "last_activity_at",
    )
    column_searchable_list = ("name", "emails.email")
    column_default_sort = ("created_at", True)
    column_formatters = {
        "name": _record_link("records.contact", "name"),
        "emails": lambda v, c, m, n: ", ".join(e.email for e in m.emails),
        "owner": _owner_name,
        "company": lambda v, c, m, n: m.company.name if m.company else "",
    }
    column_formatters_export = {"emails": lambda v, c, m, n: " ".join(e.email for e in m.emails)}
    form_columns = ("name", "email_addresses", "title", "phone", "company", "owner", "lead_source")
    form_extra_fields = {
        "email_addresses": fields.StringField("Email addresses", description="comma separated")
    }
    form_ajax_refs = {
        "company": {"fields": ("name",), "page_size": 10},
        "owner": {"fields": ("name", "email"), "page_size": 10},
    }

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None:
            form.email_addresses.data = ", ".join(e.email for e in model.emails)

    def on_model_change(self, form: Any, model: Contact, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        raw = [a.strip() for a in (form.email_addresses.data or "").replace(";", ",").split(",") if a.strip()]
        wanted: list[str] = []
        for address in raw:
            normalized = normalize_email(address)
            if normalized is None:
                raise DomainError(f"{address!r} is not an email address")
            wanted.append(normalized)
        with db().no_autoflush:
            keep = [e for e in model.emails if e.email in wanted]
            model.emails[:] = keep
            db().flush()
            for address in dict.fromkeys(wanted):
                if address not in {e.email for e in model.emails} and not add_contact_email(
                    db(), model, address
                ):
                    raise DomainError(f"{address} already belongs to another contact")


class DealView(ThreadlineModelView):
    column_list = (
        "title",
        "company",
        "value",
        "currency",
        "stage",
        "status",
        "owner",
        "expected_close_on",
        "created_at",
        "last_activity_at",
    )
    column_sortable_list = (
        "title",
        ("company", "company.name"),
        "value",
        ("stage", "stage.position"),
        "status",
        ("owner", "owner.name"),
        "expected_close_on",
        "created_at",
        "last_activity_at",
    )
    column_searchable_list = ("title",)
    column_default_sort = ("created_at", True)
    column_formatters = {
        "title": _record_link("records.deal", "title"),
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "owner": _owner_name,
        "stage": lambda v, c, m, n: f"{m.pipeline.name} / {m.stage.name}",
        "status": lambda v, c, m, n: m.status.value,
    }
    column_formatters_export = {
        "stage": lambda v, c, m, n: m.stage.name,
        "status": lambda v, c, m, n: m.status.value,
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "owner": lambda v, c, m, n: m.owner.email if m.owner else "",
    }
    form_columns = (
        "title",
        "value",
        "currency",
        "first_stage",
        "company",
        "contacts",
        "owner",
        "expected_close_on",
        "alerts_muted",
    )
    form_overrides = {"value": fields.StringField}
    form_args = {
        "value": {"default": "0", "validators": [validators.DataRequired()]},
        "currency": {"default": "USD"},
    }
    form_ajax_refs = {
        "company": {"fields": ("name",), "page_size": 10},
        "contacts": {"fields": ("name",), "page_size": 10},
        "owner": {"fields": ("name", "email"), "page_size": 10},
    }
    form_extra_fields = {
        "first_stage": fields.SelectField("Stage", coerce=str, choices=[], validate_choice=False),
    }

    def create_form(self, obj: Any = None) -> Any:
        form = super().create_form(obj)
        form.first_stage.choices = choices(
            [("", "first open stage of the first pipeline"), *_stage_options()]
        )
        return form

    def edit_form(self, obj: Any = None) -> Any:
        form = super().edit_form(obj)
        # a deal moves between stages only through move_deal_to_stage (deal page, board)
        del form["first_stage"]
        return form

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None:
            form.value.data = str(model.value)

    def create_model(self, form: Any) -> Any:
        session = db()
        try:
            stage_id = form.first_stage.data or ""
            stage = session.get(Stage, int(stage_id)) if stage_id.isdigit() else None
            pipeline = stage.pipeline if stage else default_pipeline(session)
            owner = form.owner.data if "owner" in form else auth.user()
            deal = create_deal(
                session,
                title=form.title.data or "",
                now=now(),
                pipeline=pipeline,
                stage=stage,
                value=parse_money(form.value.data or "0"),
                currency=form.currency.data or "USD",
                company=form.company.data,
                contacts=list(form.contacts.data or []),
                owner=owner if auth.is_manager_or_admin() else auth.user(),
                expected_close_on=form.expected_close_on.data,
                by=auth.user(),
            )
            deal.alerts_muted = bool(form.alerts_muted.data)
            session.commit()
        except DomainError as exc:
            session.rollback()
            flash(str(exc), "error")
            return False
        return deal

    def on_model_change(self, form: Any, model: Deal, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        raw = form.value.data
        model.value = parse_money(raw if isinstance(raw, str) else str(raw))
        currency = (model.currency or "").strip().upper()
        if len(currency) != 3 or not currency.isalpha():
            raise DomainError(f"currency must be a three-letter code like EUR, got {model.currency!r}")
        model.currency = currency


class TaskView(ThreadlineModelView):
    owner_field = "assignee"
    column_list = ("title", "assignee", "due_at", "done_at", "deal", "contact", "created_at")
    column_sortable_list = ("title", ("assignee", "assignee.name"), "due_at", "done_at", "created_at")
    column_searchable_list = ("title",)
    column_default_sort = ("due_at", False)
    column_formatters = {
        "assignee": _owner_name,
        "deal": lambda v, c, m, n: (
            Markup('<a href="{}">{}</a>').format(url_for("records.deal", record_id=m.deal_id), m.deal.title)
            if m.deal
            else ""
        ),
        "contact": lambda v, c, m, n: (
            Markup('<a href="{}">{}</a>').format(
                url_for("records.contact", record_id=m.contact_id), m.contact.name
            )
            if m.contact
            else ""
        ),
    }
    form_columns = ("title", "notes", "due_at", "assignee", "deal", "contact")
    form_overrides = {"due_at": fields.DateTimeField}
    form_args = {
        "due_at": {
            "format": "%Y-%m-%d %H:%M",
            "validators": [validators.Optional()],
            "description": "your team's local time, e.g. 2026-12-01 09:00",
        }
    }
    form_ajax_refs = {
        "deal": {"fields": ("title",), "page_size": 10},
        "contact": {"fields": ("name",), "page_size": 10},
        "assignee": {"fields": ("name", "email"), "page_size": 10},
    }

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None and model.due_at is not None:
            form.due_at.data = model.due_at.astimezone(team_tz()).replace(tzinfo=None)

    def on_model_change(self, form: Any, model: Task, is_created: bool) -> None:
        model.due_at = local_naive_to_utc(model.due_at)
        super().on_model_change(form, model, is_created)


class ActivityView(ThreadlineModelView):
    """Activities are read here; they are logged on record pages and by the sync, never edited by hand."""

    column_list = ("occurred_at", "kind", "subject", "direction", "from_address", "author", "company", "deal")
    column_sortable_list = ("occurred_at", "kind", "subject")
    column_searchable_list = ("subject", "from_address")
    column_default_sort = ("occurred_at", True)
    column_formatters = {
        "kind": lambda v, c, m, n: m.kind.value,
        "direction": lambda v, c, m, n: m.direction.value if m.direction else "",
        "author": _owner_name,
        "company": lambda v, c, m, n: (
            Markup('<a href="{}">{}</a>').format(
                url_for("records.company", record_id=m.company_id), m.company.name
            )
            if m.company
            else ""
        ),
        "deal": lambda v, c, m, n: (
            Markup('<a href="{}">{}</a>').format(url_for("records.deal", record_id=m.deal_id), m.deal.title)
            if m.deal
            else ""
        ),
    }
    column_formatters_export = {
        "kind": lambda v, c, m, n: m.kind.value,
        "direction": lambda v, c, m, n: m.direction.value if m.direction else "",
        "author": lambda v, c, m, n: m.author.email if m.author else "",
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "deal": lambda v, c, m, n: m.deal.title if m.deal else "",
    }

    @property  # type: ignore[override]
    def can_create(self) -> bool:
        return False

    @property  # type: ignore[override]
    def can_edit(self) -> bool:
        return False

    @property  # type: ignore[override]
    def can_delete(self) -> bool:
        return auth.is_admin()

    def row_writable(self, model: Any) -> bool:
        return auth.is_admin()


# ---- admin-only configuration ---------------------------------------------------------------------------


class AdminModelView(ThreadlineModelView):
    can_export = False

    def is_accessible(self) -> bool:
        return auth.is_admin()

    def row_writable(self, model: Any) -> bool:
        return auth.is_admin()


class UserView(AdminModelView):
    column_list = ("email", "name", "role", "active", "alerts_enabled", "created_at")
    column_searchable_list = ("email", "name")
    column_exclude_list = ("password_hash",)
    column_formatters = {"role": lambda v, c, m, n: m.role.value}
    form_columns = ("email", "name", "role", "new_password", "active", "alerts_enabled")
    form_overrides = {"role": fields.SelectField}
    form_args = {"role": {"choices": choices([(r.value, r.value) for r in Role]), "coerce": str}}
    form_extra_fields = {
        "new_password": fields.PasswordField(
            "Password", description="at least 8 characters; leave empty to keep the current one"
        )
    }

    def is_action_allowed(self, name: str) -> bool:
        return name != "reassign" and bool(super().is_action_allowed(name))

    def on_model_change(self, form: Any, model: User, is_created: bool) -> None:
        address = normalize_email(model.email or "")
        if address is None:
            raise DomainError(f"{model.email!r} is not an email address")
        model.email = address
        model.role = Role(model.role)
        model.name = (model.name or "").strip() or address
        if is_created:
            model.created_at = now()
        password = form.new_password.data or ""
        if password:
            model.password_hash = hash_password(password)
        elif is_created:
            raise DomainError("a new user needs a password")
        if not is_created and model.id == auth.user().id and (model.role != Role.ADMIN or not model.active):
            raise DomainError("you cannot take away your own admin role or deactivate yourself")

    def delete_model(self, model: User) -> bool:
        if model.id == auth.user().id:
            flash("You cannot delete yourself.", "error")
            return False
        return bool(super().delete_model(model))


class PipelineView(AdminModelView):
    column_list = ("name", "position", "created_at")
    column_editable_list = ("name", "position")
    column_default_sort = ("position", False)
    form_columns = ("name", "position")

    def delete_model(self, model: Pipeline) -> bool:
        in_use = db().scalar(select(Deal.id).where(Deal.pipeline_id == model.id).limit(1))
        if in_use is not None:
            flash(f"Pipeline {model.name!r} still has deals: move or delete them first.", "error")
            return False
        return bool(super().delete_model(model))

    def on_model_change(self, form: Any, model: Pipeline, is_created: bool) -> None:
        if not (model.name or "").strip():
            raise DomainError("a pipeline needs a name")
        model.name = model.name.strip()
        if is_created:
            model.created_at = now()


class StageView(AdminModelView):
    column_list = ("pipeline", "position", "name", "probability", "stall_days", "kind", "alerts_excluded")
    column_sortable_list = (("pipeline", "pipeline.position"), "position", "name", "probability")
    column_default_sort = [("pipeline.position", False), ("position", False)]
    column_editable_list = ("name", "position", "probability", "stall_days", "alerts_excluded")
    column_formatters = {"kind": lambda v, c, m, n: m.kind.value}
    column_labels = {"probability": "Win probability (%)", "stall_days": "Stalled after (days)"}
    form_columns = ("pipeline", "name", "position", "probability", "stall_days", "kind", "alerts_excluded")
    form_overrides = {"kind": fields.SelectField}
    form_args = {
        "probability": {"validators": [validators.NumberRange(0, 100)]},
        "stall_days": {"validators": [validators.Optional(), validators.NumberRange(1, 3650)]},
        "kind": {"choices": choices([(k.value, k.value) for k in StageKind]), "coerce": str},
    }

    def on_model_change(self, form: Any, model: Stage, is_created: bool) -> None:
        if not (model.name or "").strip():
            raise DomainError("a stage needs a name")
        if model.probability is not None and not 0 <= model.probability <= 100:
            raise DomainError("win probability is between 0 and 100")
        model.kind = StageKind(model.kind)

    def delete_model(self, model: Stage) -> bool:
        in_use = db().scalar(select(Deal.id).where(Deal.stage_id == model.id).limit(1))
        if in_use is not None:
            flash(f"Stage {model.name!r} still has deals: move them first.", "error")
            return False
        return bool(super().delete_model(model))


def register(admin: Any, session: scoped_session[Session]) -> None:
    contact_filters = [
        IntEqualFilter(Contact.owner_id, "Owner", options=_user_options),
        FilterLike("company.name", "Company"),
        FilterLike(Contact.lead_source, "Lead source"),
        UTCDateBetweenFilter(Contact.created_at, "Created"),
        UTCDateBetweenFilter(Contact.last_activity_at, "Last activity"),
    ]
    company_filters = [
        IntEqualFilter(Company.owner_id, "Owner", options=_user_options),
        UTCDateBetweenFilter(Company.created_at, "Created"),
        UTCDateBetweenFilter(Company.last_activity_at, "Last activity"),
    ]
    deal_filters = [
        IntEqualFilter(Deal.owner_id, "Owner", options=_user_options),
        IntEqualFilter(Deal.stage_id, "Stage", options=_stage_options),
        IntEqualFilter(Deal.pipeline_id, "Pipeline", options=_pipeline_options),
        EnumValueFilter(Deal.status, "Status", DealStatus),
        FilterLike("company.name", "Company"),
        UTCDateBetweenFilter(Deal.created_at, "Created"),
        UTCDateBetweenFilter(Deal.closed_at, "Closed"),
        DateBetweenFilter(Deal.expected_close_on, "Expected close"),
        UTCDateBetweenFilter(Deal.last_activity_at, "Last activity"),
    ]
    task_filters = [
        IntEqualFilter(Task.assignee_id, "Assignee", options=_user_options),
        UTCDateBetweenFilter(Task.due_at, "Due"),
        UTCDateBetweenFilter(Task.done_at, "Done"),
    ]
    activity_filters = [
        EnumValueFilter(Activity.kind, "Kind", ActivityKind),
        EnumValueFilter(Activity.direction, "Direction", Direction),
        IntEqualFilter(Activity.author_id, "Author", options=_user_options),
        FilterLike("company.name", "Company"),
        BooleanEqualFilter(Activity.needs_deal_review, "Needs a deal"),
        UTCDateBetweenFilter(Activity.occurred_at, "Occurred"),
    ]
    user_filters = [EnumValueFilter(User.role, "Role", Role), BooleanEqualFilter(User.active, "Active")]
    views: list[tuple[type[ThreadlineModelView], Any, str, str, list[Any]]] = [
        (ContactView, Contact, "Contacts", "contact", contact_filters),
        (CompanyView, Company, "Companies", "company", company_filters),
        (DealView, Deal, "Deals", "deal", deal_filters),
        (TaskView, Task, "Tasks", "task", task_filters),
        (ActivityView, Activity, "Activities", "activity", activity_filters),
    ]
    for view_class, model, name, endpoint, filters in views:
        view_class.column_filters = filters  # type: ignore[assignment,misc]
        admin.add_view(view_class(model, session, name=name, endpoint=endpoint, category=None))
    UserView.column_filters = user_filters
    for view_class, model, name, endpoint in (
        (UserView, User, "Users", "user"),
        (PipelineView, Pipeline, "Pipelines", "pipeline"),
        (StageView, Stage, "Stages", "stage"),
    ):
        admin.add_view(view_class(model, session, name=name, endpoint=endpoint, category="Settings"))
