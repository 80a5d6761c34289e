"""Pipelines and their stages (admins only): names, order, win probability, stall days and kind.

Removing a pipeline or a stage goes through models.deals, which refuses while deals are in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from wtforms import fields, validators

from admin.context import now
from admin.views.base import AdminModelView, commit
from admin.views.filters import choices
from models.deals import delete_pipeline, delete_stage
from models.errors import DomainError
from models.schema import Pipeline, Stage, StageKind


class RemovedThroughModels(AdminModelView):
    """Deleting a row goes through `remove`, a models operation that may refuse (shown to the user)."""

    remove: Callable[[Session, Any], None]

    def delete_model(self, model: Any) -> bool:
        def delete(session: Session) -> bool:
            self.remove(session, model)
            return True

        return commit(delete, failure="Not deleted: ") is not None


class PipelineView(RemovedThroughModels):
    remove = staticmethod(delete_pipeline)
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


class StageView(RemovedThroughModels):
    remove = staticmethod(delete_stage)
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
