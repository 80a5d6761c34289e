"""The pipeline and stage editor (admins only): one page with every pipeline and its stages in order.

Stages are renamed in place, given a win probability, a "stalled after" number of days and a kind, and put in
order by dragging a row or with its Up and Down buttons (static/stages.js); "Save changes" sends the whole
pipeline to models.deals.save_pipeline. Removing a stage that holds deals asks where they go first, and moves
them through models.deals.move_deal_to_stage (remove_stage), so every deal's stage history records the move.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, settings
from admin.views.base import AdminOnlyView, commit, expose
from models.deals import (
    StageEdit,
    add_stage,
    count_deals_in_stage,
    create_pipeline,
    delete_pipeline,
    remove_stage,
    save_pipeline,
)
from models.errors import DomainError
from models.schema import Deal, Pipeline, Stage, StageKind

KIND_LABELS = {StageKind.OPEN: "Open", StageKind.WON: "Won", StageKind.LOST: "Lost"}


def whole_number(value: str | None, label: str, *, optional: bool = False) -> int | None:
    text = (value or "").strip().rstrip("%")
    if not text:
        if optional:
            return None
        raise DomainError(f"{label} is missing")
    if not text.isdigit():
        raise DomainError(f"{label}: {text!r} is not a whole number")
    return int(text)


def stage_edits(form: Any, pipeline: Pipeline) -> list[StageEdit]:
    """The submitted stages, in the submitted order."""
    order = [int(i) for i in (form.get("order") or "").split(",") if i.strip().isdigit()]
    edits = []
    for stage_id in order:
        prefix = f"stage-{stage_id}-"
        name = form.get(prefix + "name", "")
        try:
            kind = StageKind(form.get(prefix + "kind", ""))
        except ValueError:
            raise DomainError(f"{name}: choose open, won or lost") from None
        probability = whole_number(form.get(prefix + "probability"), f"{name}: win probability")
        assert probability is not None
        edits.append(
            StageEdit(
                stage_id=stage_id,
                name=name,
                probability=probability,
                stall_days=whole_number(
                    form.get(prefix + "stall_days"), f"{name}: stalled after", optional=True
                ),
                kind=kind,
                alerts_excluded=form.get(prefix + "alerts_excluded") == "y",
            )
        )
    return edits


class PipelineEditorView(AdminOnlyView):
    @expose("/")
    def index(self) -> str:
        session = db()
        pipelines = list(session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)))
        counts: dict[int, int] = {
            stage_id: n
            for stage_id, n in session.execute(
                select(Deal.stage_id, func.count(Deal.id)).group_by(Deal.stage_id)
            )
        }
        return self.page(
            "threadline/pipelines.html",
            pipelines=pipelines,
            counts=counts,
            kinds=KIND_LABELS,
            counts_in=lambda p: sum(counts.get(s.id, 0) for s in p.stages),
            default_stall_days=settings().alerts.stall_days,
        )

    def pipeline_or_404(self, pipeline_id: int) -> Pipeline:
        pipeline = db().get(Pipeline, pipeline_id)
        if pipeline is None:
            abort(404)
        return pipeline

    @expose("/<int:pipeline_id>/save", methods=("POST",))
    def save(self, pipeline_id: int) -> BaseResponse:
        pipeline = self.pipeline_or_404(pipeline_id)

        def run(session: Any) -> bool:
            save_pipeline(
                session,
                pipeline,
                name=request.form.get("name", ""),
                stages=stage_edits(request.form, pipeline),
            )
            return True

        if commit(run, failure="Not saved: ") is not None:
            flash(f"{pipeline.name} saved.", "success")
        return redirect(url_for(".index") + f"#pipeline-{pipeline_id}")

    @expose("/<int:pipeline_id>/stages", methods=("POST",))
    def add(self, pipeline_id: int) -> BaseResponse:
        pipeline = self.pipeline_or_404(pipeline_id)
        name = request.form.get("name", "")
        stage = commit(lambda s: add_stage(s, pipeline, name=name), failure="Stage not added: ")
        if stage is not None:
            flash(f"Stage {stage.name} added to {pipeline.name}.", "success")
        return redirect(url_for(".index") + f"#pipeline-{pipeline_id}")

    @expose("/new", methods=("POST",))
    def new(self) -> BaseResponse:
        name = request.form.get("name", "")
        pipeline = commit(lambda s: create_pipeline(s, name=name, now=now()), failure="Pipeline not added: ")
        if pipeline is not None:
            flash(f"Pipeline {pipeline.name} added with the stages New, Won and Lost.", "success")
            return redirect(url_for(".index") + f"#pipeline-{pipeline.id}")
        return redirect(url_for(".index"))

    @expose("/<int:pipeline_id>/delete", methods=("POST",))
    def delete(self, pipeline_id: int) -> BaseResponse:
        pipeline = self.pipeline_or_404(pipeline_id)
        name = pipeline.name

        def run(session: Any) -> bool:
            delete_pipeline(session, pipeline)
            return True

        if commit(run, failure="Not removed: ") is not None:
            flash(f"Pipeline {name} removed.", "success")
        return redirect(url_for(".index"))

    @expose("/stage/<int:stage_id>/remove", methods=("GET", "POST"))
    def remove(self, stage_id: int) -> BaseResponse | str:
        """Ask where the stage's deals go (if it has any), then remove it."""
        session = db()
        stage = session.get(Stage, stage_id)
        if stage is None:
            abort(404)
        deals = count_deals_in_stage(session, stage)
        targets = [s for s in stage.pipeline.stages if s.id != stage.id]
        if request.method == "POST":
            target_id = request.form.get("move_to", type=int)
            target = session.get(Stage, target_id) if target_id else None
            name, pipeline_id = stage.name, stage.pipeline_id
            moved = commit(
                lambda s: remove_stage(s, stage, move_to=target, now=now(), by=permissions.user()),
                failure="Not removed: ",
            )
            if moved is not None:
                where = f"; its {moved} deal(s) moved to {target.name}" if moved and target else ""
                flash(f"Stage {name} removed{where}.", "success")
                return redirect(url_for(".index") + f"#pipeline-{pipeline_id}")
            return redirect(url_for(".remove", stage_id=stage_id))
        return self.page("threadline/remove_stage.html", stage=stage, deals=deals, targets=targets)
