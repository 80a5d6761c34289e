"""Pipelines and their stages (admins only): names, order, win probability, stall days and kind.

Removing a pipeline or a stage goes through models.deals, which refuses while deals are in it.
"""

from __future__ import annotations

from typing import Any

from flask import flash
from wtforms import fields, validators

from admin.context import db, now
from admin.views.base import AdminModelView
from admin.views.filters import choices
from models.deals import delete_pipeline, delete_stage
from models.errors import DomainError
from models.schema import Pipeline, Stage, StageKind


class PipelineView(AdminModelView):
    column_list = ("name", "position", "created_at")
    column_editable_list = ("name", "position")
    column_default_sort = ("position", False)
    form_columns = ("name", "position")

    def on_model_change(self, form: Any, model: Pipeline, is_created: bool) -> None:
        if not (model.name or "").strip():
            raise DomainError("a pipeline needs a name")
        model.name = model.name.strip()
        if is_created:
            model.created_at = now()

    def delete_model(self, model: Pipeline) -> bool:
        session = db()
        try:
            delete_pipeline(session, model)
            session.commit()
        except DomainError as exc:
            session.rollback()
            flash(f"Not deleted: {exc}.", "error")
            return False
        return True


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
        session = db()
        try:
            delete_stage(session, model)
            session.commit()
        except DomainError as exc:
            session.rollback()
            flash(f"Not deleted: {exc}.", "error")
            return False
        return True
