"""The company list and form: names link to the record page; domains are set through models.contacts."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import IntEqualFilter
from sqlalchemy.orm import selectinload
from wtforms import fields

from admin.context import db
from admin.formatting import split_list
from admin.views.base import ThreadlineModelView, owner_name, record_link
from admin.views.filters import UTCDateBetweenFilter, user_options
from admin.views.merge import MergeListAction
from models.contacts import set_company_domains
from models.schema import Company


class CompanyView(MergeListAction, ThreadlineModelView):
    merge_kinds = "companies"
    quick_add = "quick.company"
    record_page = "records.company"
    column_list = ("name", "domains", "owner", "created_at", "last_activity_at")
    column_sortable_list = ("name", ("owner", "owner.name"), "created_at", "last_activity_at")
    column_searchable_list = ("name", "domains.domain")
    column_default_sort = ("name", False)
    column_filters = (
        IntEqualFilter(Company.owner_id, "Owner", options=user_options),
        UTCDateBetweenFilter(Company.created_at, "Created"),
        UTCDateBetweenFilter(Company.last_activity_at, "Last activity"),
    )
    column_formatters = {
        "name": record_link("records.company", "name"),
        "domains": lambda v, c, m, n: ", ".join(d.domain for d in m.domains),
        "owner": owner_name,
    }
    column_formatters_export = {
        "domains": lambda v, c, m, n: " ".join(d.domain for d in m.domains),
        "owner": lambda v, c, m, n: m.owner.email if m.owner else "",
    }
    form_columns = ("name", "domain_names", "owner")
    form_extra_fields = {
        "domain_names": fields.StringField(
            "Domains", description="Email domains of this company, comma separated"
        )
    }
    form_ajax_refs = {"owner": {"fields": ("name", "email"), "page_size": 10, "placeholder": "Type a name"}}

    def get_query(self) -> Any:
        # a collection Flask-Admin does not join: loaded with the page instead of one query per row
        return super().get_query().options(selectinload(Company.domains))

    def on_form_prefill(self, form: Any, id: Any) -> None:
        model = self.get_one(id)
        if model is not None:
            form.domain_names.data = ", ".join(d.domain for d in model.domains)

    def on_model_change(self, form: Any, model: Company, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        set_company_domains(db(), model, split_list(form.domain_names.data))
