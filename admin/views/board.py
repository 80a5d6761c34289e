"""The pipeline board: one kanban per pipeline, and the move endpoint that its drag and drop calls.

Numbers come from models.reports.board; a move goes through models.deals.move_deal_to_stage (so the stage
history is recorded) and answers with the new column totals, which the page's script writes in place. The
same endpoint takes a plain form post, the keyboard alternative that also works without JavaScript.
"""

from __future__ import annotations

from typing import Any

from flask import flash, jsonify, redirect, request, url_for
from markupsafe import Markup
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse

from admin import permissions
from admin.context import db, now, settings
from admin.formatting import money_text
from admin.views.base import GuardedView, expose
from models.deals import move_deal_to_stage
from models.errors import DomainError
from models.reports import Board, board
from models.schema import Deal, Pipeline, Stage, User

CARDS_PER_COLUMN = 50


def column_totals(result: Board) -> list[dict[str, Any]]:
    return [
        {
            "stage_id": c.stage_id,
            "count": c.count,
            "total": money_text(c.total),
            "weighted": money_text(c.weighted),
            "more": c.more,
        }
        for c in result.columns
    ]


def more_deals_url(stage_id: int, owner_id: int | None) -> str:
    """The deal list filtered to one column of the board (the cards the board does not show)."""
    filters: dict[str, Any] = {"flt1_stage_equals": stage_id}
    if owner_id:
        filters["flt2_owner_equals"] = owner_id
    return url_for("deal.index_view", **filters)


def stage_options(result: Board) -> dict[int, Markup]:
    """Per column, the <option>s of a card's "Move to" select with that column preselected (built once)."""
    option = Markup('<option value="{}"{}>{}</option>')
    selected = Markup(" selected")
    return {
        column.stage_id: Markup("").join(
            option.format(t.stage_id, selected if t.stage_id == column.stage_id else "", t.name)
            for t in result.columns
        )
        for column in result.columns
    }


class BoardView(GuardedView):
    @expose("/")
    def index(self) -> str:
        session = db()
        config = settings()
        pipelines = list(session.scalars(select(Pipeline).order_by(Pipeline.position, Pipeline.id)))
        if not pipelines:
            return self.page("threadline/board.html", board=None, pipelines=[], users=[], owner_id=None)
        pipeline_id = request.args.get("pipeline", type=int)
        pipeline = next((p for p in pipelines if p.id == pipeline_id), pipelines[0])
        users = list(session.scalars(select(User).order_by(User.name)))
        owner_id = request.args.get("owner", type=int)
        if owner_id is not None and owner_id not in {u.id for u in users}:
            owner_id = None
        result = board(
            session,
            pipeline_id=pipeline.id,
            now=now(),
            default_stall_days=config.alerts.stall_days,
            owner_id=owner_id,
            cards_per_column=CARDS_PER_COLUMN,
        )
        is_manager = permissions.is_manager_or_admin()
        me = permissions.user().id
        return self.page(
            "threadline/board.html",
            board=result,
            pipeline=pipeline,
            pipelines=pipelines,
            users=users,
            owner_id=owner_id,
            may_move=lambda card: is_manager or card.owner_id == me,
            money_text=money_text,
            more_url=lambda stage_id: more_deals_url(stage_id, owner_id),
            stage_options=stage_options(result),
        )

    @expose("/move", methods=("POST",))
    def move(self) -> BaseResponse | tuple[BaseResponse, int]:
        wants_json = request.is_json
        data: dict[str, Any] = (request.get_json(silent=True) or {}) if wants_json else request.form.to_dict()

        def fail(message: str, status: int) -> BaseResponse | tuple[BaseResponse, int]:
            if wants_json:
                return jsonify({"ok": False, "error": message}), status
            flash(message, "error")
            return redirect(request.referrer or url_for("board.index"))

        try:
            deal_id = int(data.get("deal_id", ""))
            stage_id = int(data.get("stage_id", ""))
        except (TypeError, ValueError):
            return fail("deal_id and stage_id must be numbers", 400)
        session = db()
        deal = session.get(Deal, deal_id)
        stage = session.get(Stage, stage_id)
        if deal is None or stage is None:
            return fail("no such deal or stage", 404)
        if not permissions.can_move(deal):
            return fail("you can only move your own deals", 403)
        lost_reason = str(data.get("lost_reason") or "").strip()[:500] or None
        try:
            change = move_deal_to_stage(
                session, deal, stage, now=now(), by=permissions.user(), lost_reason=lost_reason
            )
            session.commit()
        except DomainError as exc:
            session.rollback()
            return fail(str(exc), 400)
        if not wants_json:
            flash(f"{deal.title} moved to {stage.name}.", "success")
            return redirect(request.referrer or url_for("board.index", pipeline=deal.pipeline_id))
        owner_raw = data.get("owner_id")
        owner_id = int(owner_raw) if isinstance(owner_raw, int | str) and str(owner_raw).isdigit() else None
        result = board(
            session,
            pipeline_id=deal.pipeline_id,
            now=now(),
            default_stall_days=settings().alerts.stall_days,
            owner_id=owner_id,
            cards_per_column=0,
        )
        return jsonify(
            {
                "ok": True,
                "changed": change is not None,
                "deal_id": deal.id,
                "stage_id": stage.id,
                "stage_name": stage.name,
                "status": deal.status.value,
                "columns": column_totals(result),
            }
        )
