"""The contact list and form: names link to the record page; addresses are set through models.contacts."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import FilterLike, IntEqualFilter
from sqlalchemy.orm import selectinload
from wtforms import fields

from admin.context import db
from admin.formatting import split_list
from admin.views.base import ThreadlineModelView, owner_name, record_link
from admin.views.filters import UTCDateBetweenFilter, user_options
from admin.views.merge import MergeListAction
from models.contacts import set_contact_emails
from models.schema import Contact


class ContactView(MergeListAction, ThreadlineModelView):
    merge_kinds = "contacts"
    quick_add = "quick.contact"
    record_page = "records.contact"
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
    column_filters = (
        IntEqualFilter(Contact.owner_id, "Owner", options=user_options),
        FilterLike("company.name", "Company"),
        FilterLike(Contact.lead_source, "Lead source"),
        UTCDateBetweenFilter(Contact.created_at, "Created"),
        UTCDateBetweenFilter(Contact.last_activity_at, "Last activity"),
    )
    column_formatters = {
        "name": record_link("records.contact", "name"),
        "emails": lambda v, c, m, n: ", ".join(e.email for e in m.emails),
        "owner": owner_name,
        "company": lambda v, c, m, n: m.company.name if m.company else "",
    }
    column_formatters_export = {
        "emails": lambda v, c, m, n: " ".join(e.email for e in m.emails),
        "company": lambda v, c, m, n: m.company.name if m.company else "",
        "owner": lambda v, c, m, n: m.owner.email if m.owner else "",
    }
    form_columns = ("name", "email_addresses", "title", "phone", "company", "owner", "lead_source")
    form_extra_fields = {
        "email_addresses": fields.StringField("Email addresses", description="comma separated")
    }
    form_ajax_refs = {
        "company": {"fields": ("name",), "page_size": 10, "placeholder": "Type to find a company"},
        "owner": {"fields": ("name", "email"), "page_size": 10, "placeholder": "Type a name"},
    }

    def get_query(self) -> Any:
        # a collection Flask-Admin does not join: loaded with the page instead of one query per row
        return super().get_query().options(selectinload(Contact.emails))

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None:
            form.email_addresses.data = ", ".join(e.email for e in model.emails)

    def on_model_change(self, form: Any, model: Contact, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        set_contact_emails(db(), model, split_list(form.email_addresses.data))
