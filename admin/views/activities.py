"""The activity list: read-only here (activities are logged on record pages and by the sync); admins may
delete one."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import BooleanEqualFilter, FilterLike, IntEqualFilter

from admin import permissions
from admin.views.base import ThreadlineModelView, owner_name, related_link
from admin.views.filters import EnumValueFilter, UTCDateBetweenFilter, user_options
from admin.words import label
from models.schema import Activity, ActivityKind, Direction


class ActivityView(ThreadlineModelView):
    column_list = ("occurred_at", "kind", "subject", "direction", "from_address", "author", "company", "deal")
    column_sortable_list = ("occurred_at", "kind", "subject")
    column_searchable_list = ("subject", "from_address")
    column_default_sort = ("occurred_at", True)
    column_filters = (
        EnumValueFilter(Activity.kind, "Kind", ActivityKind),
        EnumValueFilter(Activity.direction, "Direction", Direction),
        IntEqualFilter(Activity.author_id, "Author", options=user_options),
        FilterLike("company.name", "Company"),
        BooleanEqualFilter(Activity.needs_deal_review, "Needs a deal"),
        UTCDateBetweenFilter(Activity.occurred_at, "Occurred"),
    )
    column_formatters = {
        "kind": lambda v, c, m, n: label(m.kind),
        "direction": lambda v, c, m, n: label(m.direction),
        "author": owner_name,
        "company": related_link("records.company", "company", "name"),
        "deal": related_link("records.deal", "deal", "title"),
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
        return permissions.is_admin()

    def row_writable(self, model: Any) -> bool:
        return permissions.is_admin()
