"""The deal list and forms.

Creating a deal goes through models.deals.create_deal (its first stage-history entry); the edit form has no
stage field, because a deal changes stage only through models.deals.move_deal_to_stage (its page, the board).
The currency is checked by models.money.normalize_currency, next to the field.
"""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import DateBetweenFilter, FilterLike, IntEqualFilter
from sqlalchemy.orm import Session
from wtforms import Field, Form, ValidationError, fields, validators

from admin import permissions
from admin.context import now
from admin.views.base import ThreadlineModelView, commit, owner_name, record_link
from admin.views.filters import (
    EnumValueFilter,
    UTCDateBetweenFilter,
    choices,
    pipeline_options,
    stage_options,
    user_options,
)
from admin.words import label
from models.deals import create_deal, default_pipeline, parse_money
from models.errors import DomainError
from models.money import DEFAULT_CURRENCY, normalize_currency
from models.schema import Deal, DealStatus, Stage


def currency_code(form: Form, field: Field) -> None:
    """Form validator: an ISO 4217 code (models.money); the field gets the normalized code."""
    try:
        field.data = normalize_currency(field.data)
    except DomainError as exc:
        raise ValidationError(str(exc)) from None


class DealView(ThreadlineModelView):
    quick_add = "quick.deal"
    record_page = "records.deal"
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
    column_filters = (
        IntEqualFilter(Deal.owner_id, "Owner", options=user_options),
        IntEqualFilter(Deal.stage_id, "Stage", options=stage_options),
        IntEqualFilter(Deal.pipeline_id, "Pipeline", options=pipeline_options),
        EnumValueFilter(Deal.status, "Status", DealStatus),
        FilterLike("company.name", "Company"),
        UTCDateBetweenFilter(Deal.created_at, "Created"),
        UTCDateBetweenFilter(Deal.closed_at, "Closed"),
        DateBetweenFilter(Deal.expected_close_on, "Expected close"),
        UTCDateBetweenFilter(Deal.last_activity_at, "Last activity"),
    )
    column_formatters = {
        "title": record_link("records.deal", "title"),
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "owner": owner_name,
        "stage": lambda v, c, m, n: f"{m.pipeline.name} / {m.stage.name}",
        "status": lambda v, c, m, n: label(m.status),
    }
    column_formatters_export = {
        "stage": lambda v, c, m, n: m.stage.name,
        "status": lambda v, c, m, n: m.status.value,
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "owner": lambda v, c, m, n: m.owner.email if m.owner else "",
    }
    column_labels = {"alerts_muted": "No alerts for this deal", "expected_close_on": "Expected close"}
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
        "currency": {"default": DEFAULT_CURRENCY, "validators": [currency_code]},
    }
    form_ajax_refs = {
        "company": {"fields": ("name",), "page_size": 10, "placeholder": "Type to find a company"},
        "contacts": {"fields": ("name",), "page_size": 10, "placeholder": "Type to find contacts"},
        "owner": {"fields": ("name", "email"), "page_size": 10, "placeholder": "Type a name"},
    }
    form_extra_fields = {
        "first_stage": fields.SelectField("Stage", coerce=str, choices=[], validate_choice=False),
    }

    def create_form(self, obj: Any = None) -> Any:
        form = super().create_form(obj)
        form.first_stage.choices = choices([("", "first open stage of the first pipeline"), *stage_options()])
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
        def create(session: Session) -> Deal:
            stage_id = form.first_stage.data or ""
            stage = session.get(Stage, int(stage_id)) if stage_id.isdigit() else None
            me = permissions.user()
            return create_deal(
                session,
                title=form.title.data or "",
                now=now(),
                pipeline=stage.pipeline if stage else default_pipeline(session),
                stage=stage,
                value=parse_money(form.value.data or "0"),
                currency=form.currency.data or DEFAULT_CURRENCY,
                company=form.company.data,
                contacts=list(form.contacts.data or []),
                owner=form.owner.data if "owner" in form and permissions.is_manager_or_admin() else me,
                expected_close_on=form.expected_close_on.data,
                by=me,
                alerts_muted=bool(form.alerts_muted.data),
            )

        return commit(create) or False

    def on_model_change(self, form: Any, model: Deal, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        raw = form.value.data
        model.value = parse_money(raw if isinstance(raw, str) else str(raw))
        model.currency = normalize_currency(model.currency)
